{#- Regular expressions and safe casts: same meaning, different spelling per warehouse. -#}

{#- True when the whole of `expr` matches `pattern` (RE2 syntax on both warehouses). -#}
{% macro regex_full_match(expr, pattern) -%}
    {{ return(adapter.dispatch('regex_full_match', 'cdp')(expr, pattern)) }}
{%- endmacro %}

{% macro duckdb__regex_full_match(expr, pattern) -%}
    regexp_full_match({{ expr }}, '{{ pattern }}')
{%- endmacro %}

{% macro bigquery__regex_full_match(expr, pattern) -%}
    regexp_contains({{ expr }}, r'^(?:{{ pattern }})$')
{%- endmacro %}

{% macro default__regex_full_match(expr, pattern) -%}
    {{ cdp.unsupported_dialect('regex_full_match') }}
{%- endmacro %}


{#- A cast that yields null instead of failing. `type` is one of: string, bigint, double, boolean, date. -#}
{% macro try_cast(expr, type) -%}
    {{ return(adapter.dispatch('try_cast', 'cdp')(expr, type)) }}
{%- endmacro %}

{% macro duckdb__try_cast(expr, type) -%}
    {%- set types = {'string': 'varchar', 'bigint': 'bigint', 'double': 'double', 'boolean': 'boolean', 'date': 'date'} -%}
    try_cast({{ expr }} as {{ types[type] }})
{%- endmacro %}

{% macro bigquery__try_cast(expr, type) -%}
    {%- set types = {'string': 'string', 'bigint': 'int64', 'double': 'float64', 'boolean': 'bool', 'date': 'date'} -%}
    safe_cast({{ expr }} as {{ types[type] }})
{%- endmacro %}

{% macro default__try_cast(expr, type) -%}
    {{ cdp.unsupported_dialect('try_cast') }}
{%- endmacro %}


{#- True when the whole of `expr` matches the RE2 pattern held in the column/expression `pattern_expr`. -#}
{% macro regex_full_match_column(expr, pattern_expr) -%}
    {{ return(adapter.dispatch('regex_full_match_column', 'cdp')(expr, pattern_expr)) }}
{%- endmacro %}

{% macro duckdb__regex_full_match_column(expr, pattern_expr) -%}
    regexp_full_match({{ expr }}, {{ pattern_expr }})
{%- endmacro %}

{% macro bigquery__regex_full_match_column(expr, pattern_expr) -%}
    regexp_contains({{ expr }}, concat('^(?:', {{ pattern_expr }}, ')$'))
{%- endmacro %}

{% macro default__regex_full_match_column(expr, pattern_expr) -%}
    {{ cdp.unsupported_dialect('regex_full_match_column') }}
{%- endmacro %}
