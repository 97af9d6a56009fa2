{#-
    One top-level key of a JSON text as a JSON value (an object stays an object), null when absent;
    for keeping a free-form part of a payload, such as a Segment message's `properties`, whole.
    It parses the text again: call it only on the rows that need it (inside a `case`).
-#}
{% macro json_subdocument(expr, key) -%}
    {{ return(adapter.dispatch('json_subdocument', 'cdp')(expr, key)) }}
{%- endmacro %}

{% macro duckdb__json_subdocument(expr, key) -%}
    json_extract({{ expr }}, '$."{{ key }}"')
{%- endmacro %}

{% macro bigquery__json_subdocument(expr, key) -%}
    json_query(safe.parse_json({{ expr }}), '$."{{ key }}"')
{%- endmacro %}

{% macro default__json_subdocument(expr, key) -%}
    {{ cdp.unsupported_dialect('json_subdocument') }}
{%- endmacro %}
