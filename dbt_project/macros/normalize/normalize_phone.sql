{#-
    A phone number to E.164 (`+4915112345678`), or null when it cannot be one.

    1. Drop a `whatsapp:` / `tel:` prefix, the "(0)" of "+49 (0)30 ...", and the usual separators
       (spaces, dashes, dots, slashes, parentheses).
    2. `+...` stays; `00...` becomes `+...` (international prefix).
    3. A national number gets the calling code of the record's country: its trunk prefix (0 in most of
       Europe) is dropped; where the country has none (Italy, Spain, the US...) the number is kept
       whole. A national number that does not start with the trunk prefix is ambiguous (it may be an
       international number written without `+`) and becomes null. Without a known country, var
       `cdp__default_country_calling_code` applies (trunk prefix 0).
    4. The result must be `+` and 8 to 15 digits, not starting with 0.

    The country (ISO-2 such as DE, or an English name such as Germany, any case) is looked up in the
    seed `country_calling_codes`. Two ways to call it:
      normalize_phone(expr, country_expr)
          looks the country up per row (a correlated subquery): simple, for small models;
      normalize_phone_with_calling_code(expr, 'country.calling_code', 'country.trunk_prefix')
          after a join to the lookup, for large models (on 10M rows the per-row lookups cost 30 s,
          the join 0.2 s):
              left join {{ cdp.country_calling_codes_lookup() }} as country
                  on country.lookup_key = {{ cdp.country_lookup_key('traits_country') }}
-#}
{% macro normalize_phone(expr, country_expr=none) -%}
    {%- if country_expr is none -%}
        {{ cdp.normalize_phone_with_calling_code(expr) }}
    {%- else -%}
        (
            select {{ cdp.normalize_phone_with_calling_code(expr, 'country.calling_code', 'country.trunk_prefix') }}
            from (select 1 as one) as record_country
            left join {{ cdp.country_calling_codes_lookup() }} as country
                on country.lookup_key = {{ cdp.country_lookup_key(country_expr) }}
        )
    {%- endif -%}
{%- endmacro %}


{% macro normalize_phone_with_calling_code(expr, calling_code_expr=none, trunk_prefix_expr=none) -%}
    {%- set digits = cdp._phone_digits(expr) -%}
    {%- set default_code = var('cdp__default_country_calling_code', '49') | string -%}
    {%- if calling_code_expr is none -%}
        {%- set calling_code = "'" ~ default_code ~ "'" -%}
        {%- set trunk_prefix = "'0'" -%}
    {%- else -%}
        {%- set calling_code = "coalesce(" ~ calling_code_expr ~ ", '" ~ default_code ~ "')" -%}
        {%- set trunk_prefix = "case when " ~ calling_code_expr ~ " is null then '0' else coalesce("
            ~ trunk_prefix_expr ~ ", '') end" -%}
    {%- endif -%}
    {%- set candidate -%}
        case
            when {{ digits }} like '+%' then {{ digits }}
            when {{ digits }} like '00%' then '+' || substr({{ digits }}, 3)
            when substr({{ digits }}, 1, length({{ trunk_prefix }})) = {{ trunk_prefix }}
                then '+' || {{ calling_code }} || substr({{ digits }}, length({{ trunk_prefix }}) + 1)
        end
    {%- endset -%}
    case
        when {{ cdp.regex_full_match(candidate, '\\+[1-9][0-9]{7,14}') }} then {{ candidate }}
    end
{%- endmacro %}


{#- The number without prefixes, separators and the national "(0)" of "+49 (0)30...".
    translate() deletes the characters that have no replacement. -#}
{% macro _phone_digits(expr) -%}
    translate(replace(replace(replace(lower(trim({{ expr }})), 'whatsapp:', ''), 'tel:', ''), '(0)', ''), ' -./()', '')
{%- endmacro %}


{#- The seed with one row per way of naming a country: its ISO-2 code and its upper-cased name. -#}
{% macro country_calling_codes_lookup() -%}
    (
        select upper(iso2) as lookup_key, calling_code, trunk_prefix from {{ ref('country_calling_codes') }}
        union all
        select upper(name) as lookup_key, calling_code, trunk_prefix from {{ ref('country_calling_codes') }}
    )
{%- endmacro %}


{#- How a record's country (DE, de, Germany, GERMANY) is matched against lookup_key. -#}
{% macro country_lookup_key(country_expr) -%}
    upper(trim({{ country_expr }}))
{%- endmacro %}
