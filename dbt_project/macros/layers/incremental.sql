{#-
    The incremental watermark: the largest `column` already in {{ this }} (optionally among rows
    matching `where`), inlined as a literal at run time so that the warehouse prunes the older row
    groups / partitions of the input before reading them (a scalar subquery would read them all).
    Rows are taken when `column > watermark`; a first run (or an empty {{ this }}) takes everything.
    Unit tests mock {{ this }} as a CTE, so there the watermark stays a subquery.
-#}
{% macro watermark(column, where=none) -%}
    {%- set query -%}
        select {{ cdp.timestamp_to_micros('max(' ~ column ~ ')') }} from {{ this }}{% if where %} where {{ where }}{% endif %}
    {%- endset -%}
    {%- if execute and model.resource_type != 'unit_test' -%}
        {%- set latest = run_query(query).columns[0].values()[0] -%}
        {%- if latest is none -%}
            cast('1900-01-01 00:00:00' as {{ cdp.type_utc_timestamp() }})
        {%- else -%}
            cast({{ cdp.micros_to_timestamp(latest | int) }} as {{ cdp.type_utc_timestamp() }})
        {%- endif -%}
    {%- else -%}
        coalesce((select max({{ column }}) from {{ this }}{% if where %} where {{ where }}{% endif %}),
                 cast('1900-01-01 00:00:00' as {{ cdp.type_utc_timestamp() }}))
    {%- endif -%}
{%- endmacro %}
