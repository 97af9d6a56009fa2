{#- An ISO 8601 text (Z, +01:00, +0000 or no offset, read as UTC) to a UTC timestamp; null when unparseable. -#}
{% macro parse_timestamp(expr) -%}
    {{ cdp.iso_text_to_utc_timestamp('nullif(trim(' ~ expr ~ "), '')") }}
{%- endmacro %}
