{#-
    The select that opens every parsing model (int_<source>__parsed): the bronze lineage columns,
    whether the payload is a JSON object, and one text column per declared payload field, the payload
    parsed once.

    `payload_fields` maps a JSON path ('page.url') to 'string' or 'json'; the column is `payload__`
    and the path in lower case, dots as double underscores (payload__page__url), so that no field
    name (From, timestamp, smtp-id) clashes with SQL. Empty strings become null (the Salesforce
    Bulk CSV writes null as ''). A record the connector could not split, or whose payload is not a
    JSON object, is not parsed: its fields are null and its checks say why.
    `passthrough` names further columns of `from_cte` to keep (e.g. the payload, for a second look at
    the few rows that need one).
-#}
{% macro select_payload_fields(from_cte, payload_fields, passthrough=[]) -%}
    {%- set parseable -%}
        {{ from_cte }}.parse_error is null and {{ from_cte }}.is_valid_json and {{ cdp.json_is_object(from_cte ~ '.payload') }}
    {%- endset -%}
    select
        record_key,
        batch_id,
        position,
        file_name,
        landed_at,
        bronze_loaded_at,
        parse_error,
        is_valid_json,
        coalesce(is_valid_json and is_json_object, false) as is_json_object,
        {%- for column in passthrough %}
        {{ column }},
        {%- endfor %}
        {%- for path, kind in payload_fields.items() %}
        {%- set value = cdp.json_field('doc', path, kind) %}
        {% if kind == 'json' -%}
        {{ value }}
        {%- else -%}
        nullif({{ value }}, '')
        {%- endif %} as payload__{{ path | replace('.', '__') | replace('-', '_') | lower }}{{ ',' if not loop.last }}
        {%- endfor %}
    from (
        select
            {{ from_cte }}.*,
            {{ cdp.json_is_object(from_cte ~ '.payload') }} as is_json_object,
            case when {{ parseable }} then {{ cdp.json_parse_fields(from_cte ~ '.payload', payload_fields) }} end as doc
        from {{ from_cte }}
    ) as parsed
{%- endmacro %}
