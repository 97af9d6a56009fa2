{#-
    Every mobile app record landed, its payload parsed once into typed columns (timestamps to UTC), and
    checked on its own: `invalid_reason` is null when it passes (int_app__deduplicated then looks for
    duplicates). Incremental over new bronze rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns') }}

{%- set payload_fields = {
    'event_id': 'string', 'event_name': 'string', 'device_id': 'string', 'user_id': 'string',
    'platform': 'string', 'app_version': 'string', 'os_version': 'string',
    'timestamp': 'string', 'sent_at': 'string',
    'properties.email': 'string', 'properties.method': 'string',
    'properties.course': 'string', 'properties.lesson_id': 'string', 'properties.duration_s': 'string',
    'properties.quiz_id': 'string', 'properties.score': 'string',
    'properties.push_token': 'string', 'properties.channel': 'string', 'properties.status': 'string',
} -%}

{#- consent_updated: the app's notification or privacy settings (properties channel, status) -#}
{%- set event_types = ['app_open', 'login', 'lesson_completed', 'quiz_submitted', 'push_token_registered',
    'consent_updated'] -%}

with

new_records as (

    select * from {{ ref('brz_app__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields) }}

),

typed as (

    select
        -- lineage
        record_key,
        batch_id,
        position,
        file_name,
        parse_error,
        is_valid_json,
        is_json_object,

        -- ids
        nullif(trim(payload__event_id), '') as event_id,
        nullif(trim(payload__device_id), '') as device_id,
        nullif(trim(payload__user_id), '') as user_id,

        -- event
        nullif(trim(payload__event_name), '') as event_type,
        payload__platform as platform,
        payload__app_version as app_version,
        payload__os_version as os_version,
        payload__properties__course as course,
        payload__properties__lesson_id as lesson_id,
        payload__properties__quiz_id as quiz_id,
        payload__properties__method as login_method,
        payload__properties__push_token as push_token,
        lower(nullif(trim(payload__properties__channel), '')) as consent_channel,
        lower(nullif(trim(payload__properties__status), '')) as consent_status,

        -- numerics
        cast(round({{ cdp.try_cast('payload__properties__duration_s', 'double') }}) as {{ dbt.type_bigint() }}) as duration_seconds,
        {{ cdp.try_cast('payload__properties__score', 'double') }} as quiz_score,

        -- identity (login)
        {{ cdp.normalize_email('payload__properties__email') }} as email,
        payload__properties__email as email_raw,

        -- timestamps (the device's offset applied: UTC)
        payload__timestamp as occurred_at_raw,
        {{ cdp.parse_timestamp('payload__timestamp') }} as occurred_at,
        {{ cdp.parse_timestamp('payload__sent_at') }} as sent_at,
        landed_at,
        bronze_loaded_at

    from extracted

),

validated as (

    select
        typed.*,
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            {{ cdp.missing_required_field({
                'event_id': 'event_id', 'event_type': 'event_name', 'device_id': 'device_id',
                'occurred_at_raw': 'timestamp'}) }},
            case
                when event_type not in ('{{ event_types | join("', '") }}')
                    then 'unknown event type ' || {{ cdp.quoted_value('event_type') }}
            end,
            {{ cdp.consent_update_invalid_reason('consent_channel', 'consent_status') }},
            case
                when occurred_at is null
                    then 'timestamp is not a valid ISO 8601 time: ' || {{ cdp.quoted_value('occurred_at_raw') }}
            end
        ) as invalid_reason
    from typed

)

select * from validated
