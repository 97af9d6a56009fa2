{#- Timestamps. Silver stores UTC: TIMESTAMP without time zone on DuckDB, TIMESTAMP (always UTC) on BigQuery. -#}

{#-
    An ISO 8601 text to a UTC timestamp; null when it is not one.
    Accepts `2026-03-01T10:15:30.123Z`, `+01:00`, `+0100`, `+01` offsets, a space instead of `T`,
    and no offset at all (read as UTC).
-#}
{% macro iso_text_to_utc_timestamp(expr) -%}
    {{ return(adapter.dispatch('iso_text_to_utc_timestamp', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__iso_text_to_utc_timestamp(expr) -%}
    {#- A cast to TIMESTAMPTZ honours the offset but reads a text without one in the session time zone,
        and a cast to TIMESTAMP ignores the offset: pick the cast by whether the text has an offset
        (after the 10-character date, a Z or a sign can only belong to an offset). -#}
    case
        when right({{ expr }}, 1) in ('Z', 'z')
            or strpos(substr({{ expr }}, 11), '+') > 0
            or strpos(substr({{ expr }}, 11), '-') > 0
            then timezone('UTC', try_cast({{ expr }} as timestamptz))
        else try_cast({{ expr }} as timestamp)
    end
{%- endmacro %}

{% macro bigquery__iso_text_to_utc_timestamp(expr) -%}
    {#- BigQuery reads a text without an offset as UTC; %Ez is +01:00, %z is +0100. -#}
    coalesce(
        safe_cast({{ expr }} as timestamp),
        safe.parse_timestamp('%Y-%m-%dT%H:%M:%E*S%z', {{ expr }}),
        safe.parse_timestamp('%Y-%m-%dT%H:%M:%E*SZ', {{ expr }})
    )
{%- endmacro %}

{% macro default__iso_text_to_utc_timestamp(expr) -%}
    {{ cdp.unsupported_dialect('iso_text_to_utc_timestamp') }}
{%- endmacro %}


{#- Unix seconds (a number, possibly fractional) to a UTC timestamp. -#}
{% macro epoch_seconds_to_utc_timestamp(expr) -%}
    {{ return(adapter.dispatch('epoch_seconds_to_utc_timestamp', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__epoch_seconds_to_utc_timestamp(expr) -%}
    make_timestamp(cast(round({{ expr }} * 1000000) as bigint))
{%- endmacro %}

{% macro bigquery__epoch_seconds_to_utc_timestamp(expr) -%}
    timestamp_micros(cast(round({{ expr }} * 1000000) as int64))
{%- endmacro %}

{% macro default__epoch_seconds_to_utc_timestamp(expr) -%}
    {{ cdp.unsupported_dialect('epoch_seconds_to_utc_timestamp') }}
{%- endmacro %}


{#- A UTC timestamp as `2026-03-01T10:15:30.000Z` (milliseconds, like Salesforce). -#}
{% macro format_utc_timestamp_iso(expr) -%}
    {{ return(adapter.dispatch('format_utc_timestamp_iso', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__format_utc_timestamp_iso(expr) -%}
    strftime({{ expr }}, '%Y-%m-%dT%H:%M:%S.%gZ')
{%- endmacro %}

{% macro bigquery__format_utc_timestamp_iso(expr) -%}
    format_timestamp('%Y-%m-%dT%H:%M:%E3SZ', {{ expr }}, 'UTC')
{%- endmacro %}

{% macro default__format_utc_timestamp_iso(expr) -%}
    {{ cdp.unsupported_dialect('format_utc_timestamp_iso') }}
{%- endmacro %}


{#- Now, as a UTC timestamp of the silver type. -#}
{% macro current_utc_timestamp() -%}
    {{ return(adapter.dispatch('current_utc_timestamp', 'cdp')()) }}
{%- endmacro %}

{% macro duckdb__current_utc_timestamp() -%}
    timezone('UTC', current_timestamp)
{%- endmacro %}

{% macro bigquery__current_utc_timestamp() -%}
    current_timestamp()
{%- endmacro %}

{% macro default__current_utc_timestamp() -%}
    {{ cdp.unsupported_dialect('current_utc_timestamp') }}
{%- endmacro %}


{#- The silver timestamp type. -#}
{% macro type_utc_timestamp() -%}
    {{ return(adapter.dispatch('type_utc_timestamp', 'cdp')()) }}
{%- endmacro %}

{% macro duckdb__type_utc_timestamp() -%}timestamp{%- endmacro %}

{% macro default__type_utc_timestamp() -%}timestamp{%- endmacro %}


{#-
    A text key that sorts like (timestamp, tiebreak): microseconds since the epoch, zero-padded, then
    the tiebreak. For "latest value" picks that must not depend on ties (max_by over it).
-#}
{% macro timestamp_sort_key(ts, tiebreak) -%}
    {{ return(adapter.dispatch('timestamp_sort_key', 'cdp')(ts, tiebreak)) }}
{%- endmacro %}

{% macro duckdb__timestamp_sort_key(ts, tiebreak) -%}
    lpad(cast(epoch_us({{ ts }}) as varchar), 20, '0') || '|' || {{ tiebreak }}
{%- endmacro %}

{% macro bigquery__timestamp_sort_key(ts, tiebreak) -%}
    lpad(cast(unix_micros({{ ts }}) as string), 20, '0') || '|' || {{ tiebreak }}
{%- endmacro %}

{% macro default__timestamp_sort_key(ts, tiebreak) -%}
    {{ cdp.unsupported_dialect('timestamp_sort_key') }}
{%- endmacro %}


{#- A UTC timestamp as whole microseconds since 1970 and back: how a watermark read by one query is written
    into the next as an exact literal, never through the driver's own rendering of a timestamp. -#}
{% macro timestamp_to_micros(expr) -%}
    {{ return(adapter.dispatch('timestamp_to_micros', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__timestamp_to_micros(expr) -%}
    epoch_us({{ expr }})
{%- endmacro %}

{% macro bigquery__timestamp_to_micros(expr) -%}
    unix_micros({{ expr }})
{%- endmacro %}

{% macro default__timestamp_to_micros(expr) -%}
    {{ cdp.unsupported_dialect('timestamp_to_micros') }}
{%- endmacro %}

{% macro micros_to_timestamp(expr) -%}
    {{ return(adapter.dispatch('micros_to_timestamp', 'cdp')(expr)) }}
{%- endmacro %}

{% macro duckdb__micros_to_timestamp(expr) -%}
    make_timestamp(cast({{ expr }} as bigint))
{%- endmacro %}

{% macro bigquery__micros_to_timestamp(expr) -%}
    timestamp_micros({{ expr }})
{%- endmacro %}

{% macro default__micros_to_timestamp(expr) -%}
    {{ cdp.unsupported_dialect('micros_to_timestamp') }}
{%- endmacro %}
