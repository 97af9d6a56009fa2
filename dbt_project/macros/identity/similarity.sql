{#-
    Fuzzy matching for probabilistic identity resolution (gold.identity_match_candidates).

    Every macro here gives the SAME value on DuckDB and BigQuery, so that a pair scores the same on
    the laptop and at scale and a reviewer's decision means the same thing on both. That rules out
    the built-ins that exist on one side only (DuckDB's jaro_winkler_similarity and
    damerau_levenshtein, BigQuery's SOUNDEX) and asks for care with the ones both have:
      - DuckDB's levenshtein counts bytes of the UTF-8 text, BigQuery's EDIT_DISTANCE on a STRING
        counts characters: BigQuery compares the BYTES instead ('é' vs 'e' is 2 on both).
      - DuckDB's regexp_replace replaces the first match unless given 'g', BigQuery's replaces all.
      - Accents: DuckDB strip_accents, BigQuery NFD + removing the marks; the same letters remain.
    Callers compare match_text() of their values, which is plain a-z (and 0-9), so bytes and
    characters are the same thing there anyway.
-#}


{#- Text reduced to what matching compares: accents removed (ü -> u, ş -> s), lower case, the letters
    that have no accent to remove spelled out (ß -> ss, ł -> l, ø -> o, ı -> i, đ -> d), everything
    but a-z removed, or but a-z and 0-9 with keep_digits. 'Müller', 'MULLER ' and 'Mul-ler' all
    become 'muller'; null stays null.
    (A translate() with a 64-letter accent table gives the same on both but costs DuckDB 1.5 s per
    column at 600k rows; this costs 0.05 s.) -#}
{% macro match_text(expr, keep_digits=false) -%}
    {%- set text = namespace(sql="lower(" ~ cdp.remove_accents(expr) ~ ")") -%}
    {%- for letter, spelled in [('ß', 'ss'), ('ł', 'l'), ('ø', 'o'), ('ı', 'i'), ('đ', 'd')] -%}
        {%- set text.sql = "replace(" ~ text.sql ~ ", '" ~ letter ~ "', '" ~ spelled ~ "')" -%}
    {%- endfor -%}
    {{ cdp.regex_replace_all(text.sql, '[^a-z0-9]' if keep_digits else '[^a-z]', '') }}
{%- endmacro %}


{#-
    Similarity of two texts in [0, 1]: 1 - Levenshtein distance / length of the longer text
    (both in bytes, see above). 1 for equal texts (two empty texts included), null when either is
    null: unknown is not evidence either way, the caller decides what it counts for.
-#}
{% macro string_similarity(a, b) -%}
    {{ return(adapter.dispatch('string_similarity', 'cdp')(a, b)) }}
{%- endmacro %}

{% macro duckdb__string_similarity(a, b) -%}
    (1 - levenshtein({{ a }}, {{ b }}) / greatest(strlen({{ a }}), strlen({{ b }}), 1))
{%- endmacro %}

{% macro bigquery__string_similarity(a, b) -%}
    (1 - edit_distance(cast({{ a }} as bytes), cast({{ b }} as bytes)) / greatest(byte_length({{ a }}), byte_length({{ b }}), 1))
{%- endmacro %}

{% macro default__string_similarity(a, b) -%}
    {{ cdp.unsupported_dialect('string_similarity') }}
{%- endmacro %}


{#-
    A phonetic key for blocking: a simplified Soundex, written with functions both warehouses have
    (DuckDB has no soundex, and BigQuery's would be the only one to call). 'Meyer', 'Maier' and
    'Meier' -> m600; 'Schmidt' and 'Schmitt' -> s530; 'Müller' and 'Mueller' -> m460.

    1. match_text: letters only (skipped with normalized=true, for a column that already is one).
    2. Each letter to its Soundex digit: b f p v -> 1; c g j k q s x z -> 2; d t -> 3; l -> 4;
       m n -> 5; r -> 6; vowels, y, h and w -> 0. (Real Soundex lets h and w join the consonants
       around them; treating them as vowels keeps this one translate() and changes few keys.)
    3. Runs of one digit collapse to one (nn -> 5, ck -> 2). RE2 has no back-references in
       patterns, so one alternative per digit, each capturing its digit; the replacement writes all
       groups, of which only the matching one is not empty.
    4. The key is the first letter, then the digits after the first letter's own, zeros dropped,
       padded or cut to three: a letter and 3 digits. Null when there is no letter.
    A typo in a vowel or a doubled letter keeps the key; one in a consonant usually changes it,
    which is why blocking uses more than one key.
-#}
{% macro phonetic_key(expr, normalized=false) -%}
    {%- set letters = expr if normalized else cdp.match_text(expr) -%}
    {%- set digits = "translate(" ~ letters ~ ", 'abcdefghijklmnopqrstuvwxyz', '01230120022455012623010202')" -%}
    {%- set collapsed = cdp.regex_replace_all(digits, '(1)1*|(2)2*|(3)3*|(4)4*|(5)5*|(6)6*', '\\1\\2\\3\\4\\5\\6') -%}
    nullif(substr({{ letters }}, 1, 1), '') || substr(replace(substr({{ collapsed }}, 2), '0', '') || '000', 1, 3)
{%- endmacro %}


{#- Replaces every match of an RE2 pattern (DuckDB replaces only the first without the 'g' flag).
    The replacement may name groups as \1..\9. -#}
{% macro regex_replace_all(expr, pattern, replacement) -%}
    {{ return(adapter.dispatch('regex_replace_all', 'cdp')(expr, pattern, replacement)) }}
{%- endmacro %}

{% macro duckdb__regex_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}', 'g')
{%- endmacro %}

{% macro bigquery__regex_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, r'{{ pattern }}', r'{{ replacement }}')
{%- endmacro %}

{% macro default__regex_replace_all(expr, pattern, replacement) -%}
    {{ cdp.unsupported_dialect('regex_replace_all') }}
{%- endmacro %}


{#- Text without its combining marks (é -> e, ş -> s), by canonical decomposition on both warehouses;
    letters that do not decompose (ß, ł, ø) stay. -#}
{% macro remove_accents(expr) -%}
    {{ return(adapter.dispatch('remove_accents', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__remove_accents(expr) -%}
    strip_accents({{ expr }})
{%- endmacro %}

{% macro bigquery__remove_accents(expr) -%}
    regexp_replace(normalize({{ expr }}, nfd), r'\pM', '')
{%- endmacro %}

{% macro default__remove_accents(expr) -%}
    {{ cdp.unsupported_dialect('remove_accents') }}
{%- endmacro %}


{#- The 8-byte float type (DuckDB DOUBLE, BigQuery FLOAT64), for casts that a model contract needs:
    a DuckDB literal such as 0.6 is a DECIMAL. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'cdp')()) }}
{%- endmacro %}

{% macro duckdb__type_double() -%}double{%- endmacro %}

{% macro bigquery__type_double() -%}float64{%- endmacro %}

{% macro default__type_double() -%}
    {{ cdp.unsupported_dialect('type_double') }}
{%- endmacro %}
