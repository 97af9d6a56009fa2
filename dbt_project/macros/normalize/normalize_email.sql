{#-
    An email address as identity: trimmed and lower-cased; null when it is not a plausible address
    (one @, something before it, a dot in the domain, no spaces).
-#}
{% macro normalize_email(expr) -%}
    case
        when {{ cdp.regex_full_match('lower(trim(' ~ expr ~ '))', '[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+') }}
            then lower(trim({{ expr }}))
    end
{%- endmacro %}
