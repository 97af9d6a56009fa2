{#-
    "Now" for engagement windows and segments, as a timestamp literal.

    var cdp__as_of pins it (an ISO timestamp, read as UTC: tests, backfills, "who was in this segment
    on March 1st"). Unset, it is the latest event time in silver.events, capped at the current time:
    on a live system that is now, and on a fixed data set (the generator's simulated year, a test
    fixture) it is the end of the data, so the same data always gives the same scores and segments.
    The value is resolved when the model compiles and inlined as a literal, so window filters prune
    row groups like the incremental watermarks do (macros/layers/incremental.sql).

    as_of(days_before=N) is the moment N days earlier: windows are (as_of(days_before=N), as_of()].
    A model calling it depends on silver.events (the ref below is seen at parse time).
-#}
{% macro as_of(days_before=0) -%}
    {%- set moment = cdp.as_of_datetime() - modules.datetime.timedelta(days=days_before) -%}
    {%- set since_epoch = moment - modules.datetime.datetime(1970, 1, 1) -%}
    {%- set micros = (since_epoch.days * 86400 + since_epoch.seconds) * 1000000 + since_epoch.microseconds -%}
    cast({{ cdp.micros_to_timestamp(micros) }} as {{ cdp.type_utc_timestamp() }})
{%- endmacro %}


{#- The as-of moment as a naive UTC datetime (see as_of). -#}
{% macro as_of_datetime() -%}
    {%- set events = ref('events') -%}
    {%- set pinned = var('cdp__as_of', none) -%}
    {%- if pinned -%}
        {%- set parsed = modules.datetime.datetime.fromisoformat((pinned | string) | replace('Z', '+00:00')) -%}
        {%- if parsed.tzinfo is not none -%}
            {%- set parsed = parsed.astimezone(modules.pytz.utc).replace(tzinfo=none) -%}
        {%- endif -%}
        {{ return(parsed) }}
    {%- elif not execute -%}
        {#- parsing: any value will do, no SQL runs -#}
        {{ return(modules.datetime.datetime(2000, 1, 1)) }}
    {%- elif model.resource_type == 'unit_test' -%}
        {{ exceptions.raise_compiler_error(
            "unit tests of models using cdp.as_of() must pin it: overrides: {vars: {cdp__as_of: '2026-03-01T00:00:00'}}") }}
    {%- elif model.get('_cdp_as_of') is not none -%}
        {#- resolved once per model: `model` is one dict for the whole compilation of a node -#}
        {{ return(model['_cdp_as_of']) }}
    {%- else -%}
        {#- read as whole microseconds: exact, whatever the driver makes of a timestamp -#}
        {%- set query -%}
            select {{ cdp.timestamp_to_micros('least(max(occurred_at), ' ~ cdp.current_utc_timestamp() ~ ')') }}
            from {{ events }}
        {%- endset -%}
        {%- set micros = run_query(query).columns[0].values()[0] -%}
        {%- if micros is none -%}
            {%- set latest = modules.datetime.datetime.utcnow() -%}
        {%- else -%}
            {%- set latest = modules.datetime.datetime(1970, 1, 1)
                + modules.datetime.timedelta(microseconds=micros | int) -%}
        {%- endif -%}
        {%- do model.update({'_cdp_as_of': latest}) -%}
        {{ return(latest) }}
    {%- endif -%}
{%- endmacro %}
