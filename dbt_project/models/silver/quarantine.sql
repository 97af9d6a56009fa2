{#-
    Every quarantined record of every source, with its reason, as it was landed: the one place to
    look for what silver did not accept. Rows come from the checking models (int_<source>__checked);
    the payload from bronze. Incremental, per source, like events.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{%- set sources = ['web', 'app', 'salesforce', 'email', 'whatsapp'] -%}

with

{% for source_name in sources %}
{{ source_name }}_quarantined as (

    select
        '{{ source_name }}' as source,
        record_key,
        quarantine_reason as reason,
        is_duplicate,
        bronze_loaded_at
    from {{ ref('int_' ~ source_name ~ '__checked') }}
    where quarantine_reason is not null
    {% if is_incremental() -%}
        and bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = '" ~ source_name ~ "'") }}
    {%- endif %}

),

{{ source_name }}_landed as (

    select
        {{ source_name }}_quarantined.*,
        bronze.batch_id,
        bronze.position,
        bronze.file_name,
        bronze.landed_at,
        bronze.payload
    from {{ source_name }}_quarantined
    inner join {{ ref('brz_' ~ source_name ~ '__records') }} as bronze
        on bronze.record_key = {{ source_name }}_quarantined.record_key
    {% if is_incremental() -%}
    -- only bronze rows loaded since the last quarantined ones can hold new quarantined records
    where bronze.bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = '" ~ source_name ~ "'") }}
    {%- endif %}

),

{% endfor %}

unioned as (

    {% for source_name in sources -%}
    select * from {{ source_name }}_landed
    {% if not loop.last %}union all
    {% endif %}
    {%- endfor %}

),

final as (

    select
        source,
        record_key,
        batch_id,
        position,
        file_name,
        landed_at,
        payload,
        reason,
        is_duplicate,
        bronze_loaded_at
    from unioned

)

select * from final
