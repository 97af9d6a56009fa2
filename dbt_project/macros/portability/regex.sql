{#-
    Case-insensitive regular-expression search with the pattern held in a column or expression (rule
    tables kept as seeds, e.g. whatsapp_intent_rules): true when `pattern_expr` (RE2 syntax on both
    warehouses) matches anywhere in `expr`. Unicode-aware: (?i) folds Ü and ü alike.
-#}
{% macro regex_contains_ignore_case(expr, pattern_expr) -%}
    {{ return(adapter.dispatch('regex_contains_ignore_case', 'cdp')(expr, pattern_expr)) }}
{%- endmacro %}

{% macro duckdb__regex_contains_ignore_case(expr, pattern_expr) -%}
    regexp_matches({{ expr }}, {{ pattern_expr }}, 'i')
{%- endmacro %}

{% macro bigquery__regex_contains_ignore_case(expr, pattern_expr) -%}
    regexp_contains({{ expr }}, concat('(?i)', {{ pattern_expr }}))
{%- endmacro %}

{% macro default__regex_contains_ignore_case(expr, pattern_expr) -%}
    {{ cdp.unsupported_dialect('regex_contains_ignore_case') }}
{%- endmacro %}


{#-
    A regular expression as a SQL string literal, backslashes kept as written: DuckDB's standard
    strings keep them (a quote is doubled), BigQuery needs a raw string (r"..." may hold a single
    quote, not a double one).
-#}
{% macro regex_literal(pattern) -%}
    {{ return(adapter.dispatch('regex_literal', 'cdp')(pattern)) }}
{%- endmacro %}

{% macro duckdb__regex_literal(pattern) -%}
    '{{ pattern | replace("'", "''") }}'
{%- endmacro %}

{% macro bigquery__regex_literal(pattern) -%}
    {%- if '"' in pattern -%}
        {{ exceptions.raise_compiler_error('a regular expression with a double quote: ' ~ pattern) }}
    {%- endif -%}
    r"{{ pattern }}"
{%- endmacro %}

{% macro default__regex_literal(pattern) -%}
    {{ cdp.unsupported_dialect('regex_literal') }}
{%- endmacro %}
