{#- Seconds since the Unix epoch of a UTC timestamp, as a double (fractions kept): for ages and decay. -#}
{% macro epoch_seconds(expr) -%}
    {{ return(adapter.dispatch('epoch_seconds', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__epoch_seconds(expr) -%}
    epoch({{ expr }})
{%- endmacro %}

{% macro bigquery__epoch_seconds(expr) -%}
    (unix_micros({{ expr }}) / 1000000)
{%- endmacro %}

{% macro default__epoch_seconds(expr) -%}
    {{ cdp.unsupported_dialect('epoch_seconds') }}
{%- endmacro %}
