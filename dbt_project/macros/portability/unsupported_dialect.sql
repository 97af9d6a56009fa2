{#- Fails compilation clearly on a warehouse that a portability macro has no implementation for. -#}
{% macro unsupported_dialect(macro_name) -%}
    {{ exceptions.raise_compiler_error(
        "cdp." ~ macro_name ~ " has no implementation for the '" ~ target.type ~ "' adapter: add "
        ~ target.type ~ "__" ~ macro_name ~ " in dbt_project/macros/portability/"
    ) }}
{%- endmacro %}
