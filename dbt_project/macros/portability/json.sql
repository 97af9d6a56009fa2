{#-
    JSON, parsed once per record.

    A model declares the fields it needs as a dict of path -> kind ('string' or 'json'):
        {% set fields = {'event_id': 'string', 'page.url': 'string', 'properties': 'json'} %}
    then parses each payload once with json_parse_fields(payload, fields) into a column (`doc`),
    and reads fields from that column with json_field('doc', 'page.url'). 'string' fields come back
    as text (numbers and booleans as their JSON text, objects as JSON text); 'json' fields as JSON.

    DuckDB: json_transform into a STRUCT (one parse, then plain struct access).
    BigQuery: SAFE.PARSE_JSON into a JSON value, then JSON_VALUE / JSON_QUERY.
-#}

{% macro json_is_valid(expr) -%}
    {{ return(adapter.dispatch('json_is_valid', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__json_is_valid(expr) -%}
    coalesce(json_valid({{ expr }}), false)
{%- endmacro %}

{% macro default__json_is_valid(expr) -%}
    {{ cdp.unsupported_dialect('json_is_valid') }}
{%- endmacro %}

{% macro bigquery__json_is_valid(expr) -%}
    (safe.parse_json({{ expr }}) is not null)
{%- endmacro %}


{#- Whether a valid JSON document is an object: its first character after whitespace is `{`.
    Only the first 100 characters are trimmed: trimming the whole payload copies it (4 s per 4 GB). -#}
{% macro json_is_object(expr) -%}
    (substr(ltrim(substr({{ expr }}, 1, 100)), 1, 1) = '{')
{%- endmacro %}


{% macro json_parse_fields(expr, fields) -%}
    {{ return(adapter.dispatch('json_parse_fields', 'cdp')(expr, fields)) }}
{%- endmacro %}

{% macro duckdb__json_parse_fields(expr, fields) -%}
    json_transform({{ expr }}, '{{ tojson(cdp._json_struct_spec(fields)) | replace("'", "''") }}')
{%- endmacro %}

{% macro default__json_parse_fields(expr, fields) -%}
    {{ cdp.unsupported_dialect('json_parse_fields') }}
{%- endmacro %}

{% macro bigquery__json_parse_fields(expr, fields) -%}
    safe.parse_json({{ expr }})
{%- endmacro %}


{#- The nested {"key": "VARCHAR" | "JSON" | {...}} type spec json_transform expects. -#}
{% macro _json_struct_spec(fields) -%}
    {%- set spec = {} -%}
    {%- for path, kind in fields.items() -%}
        {%- set keys = path.split('.') -%}
        {%- set node = namespace(value=spec) -%}
        {%- for key in keys[:-1] -%}
            {%- if key not in node.value -%}{%- do node.value.update({key: {}}) -%}{%- endif -%}
            {%- set node.value = node.value[key] -%}
        {%- endfor -%}
        {%- do node.value.update({keys[-1]: 'JSON' if kind == 'json' else 'VARCHAR'}) -%}
    {%- endfor -%}
    {{ return(spec) }}
{%- endmacro %}


{% macro json_field(doc, path, kind='string') -%}
    {{ return(adapter.dispatch('json_field', 'cdp')(doc, path, kind)) }}
{%- endmacro %}

{% macro duckdb__json_field(doc, path, kind='string') -%}
    {{ doc }}{% for key in path.split('.') %}."{{ key }}"{% endfor %}
{%- endmacro %}

{% macro default__json_field(doc, path, kind='string') -%}
    {{ cdp.unsupported_dialect('json_field') }}
{%- endmacro %}

{% macro bigquery__json_field(doc, path, kind='string') -%}
    {%- set json_path = '$."' ~ (path.split('.') | join('"."')) ~ '"' -%}
    {%- if kind == 'json' -%}
        json_query({{ doc }}, '{{ json_path }}')
    {%- else -%}
        json_value({{ doc }}, '{{ json_path }}')
    {%- endif -%}
{%- endmacro %}


{#- A JSON object from alternating key, value arguments given as a list: [key1, expr1, key2, expr2]. -#}
{% macro json_build_object(pairs) -%}
    {{ return(adapter.dispatch('json_build_object', 'cdp')(pairs)) }}
{%- endmacro %}

{% macro duckdb__json_build_object(pairs) -%}
    json_object(
        {%- for i in range(0, pairs | length, 2) %}
        '{{ pairs[i] }}', {{ pairs[i + 1] }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}

{#- JSON_OBJECT(key, value, ...) is standard SQL:2016 and BigQuery's spelling too. -#}
{% macro default__json_build_object(pairs) -%}
    json_object(
        {%- for i in range(0, pairs | length, 2) %}
        '{{ pairs[i] }}', {{ pairs[i + 1] }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}


{#- The JSON column type, for casts and empty columns. -#}
{% macro type_json() -%}
    {{ return(adapter.dispatch('type_json', 'cdp')()) }}
{%- endmacro %}

{% macro duckdb__type_json() -%}json{%- endmacro %}

{% macro default__type_json() -%}json{%- endmacro %}


{#- One top-level key of a JSON column (such as silver.events.properties) as text; null when absent. -#}
{% macro json_text(doc, key) -%}
    {{ return(adapter.dispatch('json_text', 'cdp')(doc, key)) }}
{%- endmacro %}

{% macro duckdb__json_text(doc, key) -%}
    json_extract_string({{ doc }}, '$.{{ key }}')
{%- endmacro %}

{% macro bigquery__json_text(doc, key) -%}
    json_value({{ doc }}, '$.{{ key }}')
{%- endmacro %}

{% macro default__json_text(doc, key) -%}
    {{ cdp.unsupported_dialect('json_text') }}
{%- endmacro %}


{#-
    Several top-level keys of a JSON column as a list of text, parsing the document once (on DuckDB
    a JSON column is text: one json_extract per key would parse it once per key, 7x slower for ten
    keys). Read the items with list_item(list, index), index from 0 in the order of `keys`.
-#}
{% macro json_text_list(doc, keys) -%}
    {{ return(adapter.dispatch('json_text_list', 'cdp')(doc, keys)) }}
{%- endmacro %}

{% macro duckdb__json_text_list(doc, keys) -%}
    json_extract_string({{ doc }}, [{% for key in keys %}'$.{{ key }}'{{ ', ' if not loop.last }}{% endfor %}])
{%- endmacro %}

{% macro bigquery__json_text_list(doc, keys) -%}
    [{% for key in keys %}json_value({{ doc }}, '$.{{ key }}'){{ ', ' if not loop.last }}{% endfor %}]
{%- endmacro %}

{% macro default__json_text_list(doc, keys) -%}
    {{ cdp.unsupported_dialect('json_text_list') }}
{%- endmacro %}


{#- Item `index` (from 0) of a list; null when the list is null. -#}
{% macro list_item(list_expr, index) -%}
    {{ return(adapter.dispatch('list_item', 'cdp')(list_expr, index)) }}
{%- endmacro %}

{% macro duckdb__list_item(list_expr, index) -%}
    {{ list_expr }}[{{ index + 1 }}]
{%- endmacro %}

{% macro bigquery__list_item(list_expr, index) -%}
    {{ list_expr }}[safe_offset({{ index }})]
{%- endmacro %}

{% macro default__list_item(list_expr, index) -%}
    {{ cdp.unsupported_dialect('list_item') }}
{%- endmacro %}
