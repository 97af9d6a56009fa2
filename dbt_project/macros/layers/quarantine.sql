{#-
    Deduplication and the checked view, shared by the five sources.

    Each source has three intermediate models:
      int_<source>__parsed        every new bronze record, typed and normalized, with `invalid_reason`
                                  (null when the record passes its own checks); streams, never sorts
      int_<source>__deduplicated  one narrow row per parsed record: the key of a valid record and, when
                                  an earlier record with the same key was accepted, which one
      int_<source>__checked       (view) the two joined: `quarantine_reason` and `is_duplicate`, the one
                                  place the accepted and quarantined sets come from
    Deduplicating in the parsing query would hold every wide row in memory until all keys are counted
    (3 GB for 4M web events); the narrow ledger needs a tenth of that.
-#}


{#-
    The body of int_<source>__deduplicated: every new parsed record (dedup_key null when it failed its
    own checks). A valid record is a duplicate when its key was accepted by an earlier run (a ledger
    row without duplicate_of_*) or by an earlier record of this run (earliest landed_at, then batch,
    then position wins). Only the few keys seen twice in a run are ranked.
-#}
{% macro deduplicated_records(parsed_model, key) -%}
with

new_records as (

    select
        case when invalid_reason is null then {{ key }} end as dedup_key,
        record_key,
        batch_id,
        position,
        landed_at,
        bronze_loaded_at
    from {{ ref(parsed_model) }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

new_valid as (

    select * from new_records where dedup_key is not null

),

already_accepted as (

    {% if is_incremental() -%}
    select dedup_key, batch_id, position
    from {{ this }}
    where dedup_key is not null
        and duplicate_of_batch_id is null
        and dedup_key in (select dedup_key from new_valid)
    {%- else -%}
    select dedup_key, batch_id, position
    from new_valid
    where false
    {%- endif %}

),

keys_seen_twice as (

    select dedup_key
    from new_valid
    group by dedup_key
    having count(*) > 1

),

first_in_run as (

    select dedup_key, record_key, batch_id, position
    from (
        select
            new_valid.*,
            row_number() over (
                partition by new_valid.dedup_key
                order by new_valid.landed_at, new_valid.batch_id, new_valid.position
            ) as key_rank
        from new_valid
        inner join keys_seen_twice on keys_seen_twice.dedup_key = new_valid.dedup_key
    ) as ranked
    where key_rank = 1

),

deduplicated as (

    select
        new_records.dedup_key,
        new_records.record_key,
        new_records.batch_id,
        new_records.position,
        new_records.landed_at,
        new_records.bronze_loaded_at,
        case
            when already_accepted.dedup_key is not null then already_accepted.batch_id
            when first_in_run.record_key <> new_records.record_key then first_in_run.batch_id
        end as duplicate_of_batch_id,
        case
            when already_accepted.dedup_key is not null then already_accepted.position
            when first_in_run.record_key <> new_records.record_key then first_in_run.position
        end as duplicate_of_position
    from new_records
    left join already_accepted on already_accepted.dedup_key = new_records.dedup_key
    left join first_in_run on first_in_run.dedup_key = new_records.dedup_key

)

select * from deduplicated
{%- endmacro %}


{#-
    The body of the int_<source>__checked view: parsed records with their final verdict. Only records
    the ledger has seen are shown: a record parsed but not yet deduplicated (a run that selected the
    parsing model without the ledger) is in neither set until the ledger runs, and reconciliation says so.
-#}
{% macro checked_records(parsed_model, deduplicated_model, key_label) -%}
with

deduplicated_up_to as (

    select max(bronze_loaded_at) as bronze_loaded_at from {{ ref(deduplicated_model) }}

),

parsed as (

    select * from {{ ref(parsed_model) }}
    where bronze_loaded_at <= (select bronze_loaded_at from deduplicated_up_to)

),

duplicates as (

    select record_key, duplicate_of_batch_id, duplicate_of_position
    from {{ ref(deduplicated_model) }}
    where duplicate_of_batch_id is not null

),

checked as (

    select
        {{ cdp.star_except(['invalid_reason'], 'parsed') }},
        coalesce(
            parsed.invalid_reason,
            case
                when duplicates.record_key is not null
                    then 'duplicate of {{ key_label }} already accepted (first seen in batch '
                        || duplicates.duplicate_of_batch_id || ' position '
                        || cast(duplicates.duplicate_of_position as {{ dbt.type_string() }}) || ')'
            end
        ) as quarantine_reason,
        duplicates.record_key is not null as is_duplicate
    from parsed
    left join duplicates on duplicates.record_key = parsed.record_key

)

select * from checked
{%- endmacro %}


{#- 'missing required field x' for the first of `columns` that is null (checked in order), else null. -#}
{% macro missing_required_field(columns) -%}
    case
        {%- for column, label in columns.items() %}
        when {{ column }} is null then 'missing required field {{ label }}'
        {%- endfor %}
    end
{%- endmacro %}


{#- A value quoted for a reason: "value" (first 100 characters). -#}
{% macro quoted_value(expr) -%}
    '"' || substr({{ expr }}, 1, 100) || '"'
{%- endmacro %}

{#-
    The checks every source makes before its own, in order, as `coalesce` arguments: the connector
    could not split the record, the payload is not JSON, or it is not a JSON object.
-#}
{% macro structural_invalid_reasons() -%}
parse_error,
            case when not is_valid_json then 'payload is not valid JSON' end,
            case when not is_json_object then 'payload is not a JSON object' end
{%- endmacro %}

{#- The consent channels and the statuses a consent_updated event may state (gold.consent_events). -#}
{% macro consent_channels() -%}
    {{ return(['email', 'whatsapp', 'sms', 'push', 'analytics']) }}
{%- endmacro %}

{#-
    A consent_updated event (web and app trackers, the ingestion API) must name a known channel and
    status: otherwise it is quarantined with this reason rather than silently left out of the ledger.
-#}
{% macro consent_update_invalid_reason(channel, status) -%}
case
                when event_type = 'consent_updated'
                    and (coalesce({{ channel }}, '') not in ('{{ cdp.consent_channels() | join("', '") }}')
                        or coalesce({{ status }}, '') not in ('opted_in', 'opted_out'))
                    then 'consent_updated needs properties.channel ({{ cdp.consent_channels() | join(", ") }}) and '
                        || 'properties.status (opted_in, opted_out), got channel '
                        || coalesce({{ cdp.quoted_value(channel) }}, 'none') || ', status '
                        || coalesce({{ cdp.quoted_value(status) }}, 'none')
            end
{%- endmacro %}
