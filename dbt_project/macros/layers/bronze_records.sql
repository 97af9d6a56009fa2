{#-
    The body of every bronze model: the landed records of one source as they are, plus typed metadata.
    Incremental by batch: a run appends the batches not yet in {{ this }} (a batch is immutable, so a
    batch is either wholly in bronze or not at all). Nothing is parsed here beyond checking that the
    payload is valid JSON; silver does the rest.
-#}
{% macro bronze_records(source_name) -%}
with

landed as (

    select * from {{ source(source_name, 'landed') }}
    {% if is_incremental() %}
    where batch_id not in ({{ cdp.known_batch_ids() }})
    {% endif %}

),

with_metadata as (

    select
        batch_id || ':' || cast(position as {{ dbt.type_string() }}) as record_key,
        batch_id,
        cast(position as {{ dbt.type_bigint() }}) as position,
        file_name,
        cast(landed_at as {{ cdp.type_utc_timestamp() }}) as landed_at,
        payload,
        parse_error,
        {{ cdp.json_is_valid('payload') }} as is_valid_json,
        {{ cdp.current_utc_timestamp() }} as bronze_loaded_at
    from landed

)

select * from with_metadata
{%- endmacro %}


{#-
    The batch ids already in {{ this }}, as a literal list when dbt executes (so the warehouse can skip
    those batch files before reading them), a subquery while parsing.
-#}
{% macro known_batch_ids() -%}
    {%- if execute -%}
        {%- set known = run_query('select distinct batch_id from ' ~ this) -%}
        {%- set ids = known.columns[0].values() -%}
        {%- if ids | length == 0 -%}
            {#- nothing yet: a list that matches no batch id -#}
            ''
        {%- else -%}
            {%- for batch_id in ids -%}'{{ batch_id }}'{{ ', ' if not loop.last }}{%- endfor -%}
        {%- endif -%}
    {%- else -%}
        select batch_id from {{ this }}
    {%- endif -%}
{%- endmacro %}
