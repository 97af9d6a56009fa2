{#- `select *` without some columns, optionally of one relation alias. -#}
{% macro star_except(columns, relation_alias=none) -%}
    {{ return(adapter.dispatch('star_except', 'cdp')(columns, relation_alias)) }}
{%- endmacro %}

{% macro duckdb__star_except(columns, relation_alias=none) -%}
    {{ relation_alias ~ '.' if relation_alias }}* exclude ({{ columns | join(', ') }})
{%- endmacro %}

{% macro bigquery__star_except(columns, relation_alias=none) -%}
    {{ relation_alias ~ '.' if relation_alias }}* except ({{ columns | join(', ') }})
{%- endmacro %}

{% macro default__star_except(columns, relation_alias=none) -%}
    {{ cdp.unsupported_dialect('star_except') }}
{%- endmacro %}
