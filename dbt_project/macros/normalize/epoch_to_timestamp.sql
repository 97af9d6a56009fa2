{#-
    Unix seconds (a number or its text; fractions kept to the microsecond) to a UTC timestamp.
    Null when it is not a number or not between 1970 and 2100, which also rejects milliseconds
    sent by mistake (they would land in the year 50000).
-#}
{% macro epoch_to_timestamp(expr) -%}
    {%- set seconds = cdp.try_cast(expr, 'double') -%}
    case
        when {{ seconds }} >= 0 and {{ seconds }} < 4102444800
            then {{ cdp.epoch_seconds_to_utc_timestamp(seconds) }}
    end
{%- endmacro %}
