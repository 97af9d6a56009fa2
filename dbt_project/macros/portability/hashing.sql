{#- Hashes as lower-case hex text: the same string on every warehouse (MD5 is stable across versions). -#}
{% macro md5_hex(expr) -%}
    {{ return(adapter.dispatch('md5_hex', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__md5_hex(expr) -%}
    md5({{ expr }})
{%- endmacro %}

{% macro bigquery__md5_hex(expr) -%}
    to_hex(md5({{ expr }}))
{%- endmacro %}

{% macro default__md5_hex(expr) -%}
    {{ cdp.unsupported_dialect('md5_hex') }}
{%- endmacro %}
