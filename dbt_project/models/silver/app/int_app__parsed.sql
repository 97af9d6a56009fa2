{#-
    Every mobile app record landed, its payload parsed once into typed columns (timestamps to UTC), and
    checked on its own: `invalid_reason` is null when it passes (int_app__deduplicated then looks for
    duplicates). Two formats (message_format): the native app SDK's events, and Segment-spec messages
    the ingestion API lands here (screens, and calls with context.device.id; macros/layers/segment_spec.sql,
    docs/sources.md). Incremental over new bronze rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{%- set payload_fields = {
    'event_id': 'string', 'event_name': 'string', 'device_id': 'string', 'user_id': 'string',
    'platform': 'string', 'app_version': 'string', 'os_version': 'string',
    'timestamp': 'string', 'sent_at': 'string',
    'properties.email': 'string', 'properties.method': 'string',
    'properties.course': 'string', 'properties.lesson_id': 'string', 'properties.duration_s': 'string',
    'properties.quiz_id': 'string', 'properties.score': 'string',
    'properties.push_token': 'string', 'properties.channel': 'string', 'properties.status': 'string',
} -%}
{#- Segment-spec messages: the device, OS and app in context -#}
{%- do payload_fields.update(cdp.segment_payload_fields()) -%}
{%- do payload_fields.update({
    'context.device.id': 'string', 'context.os.name': 'string', 'context.os.version': 'string',
    'context.app.version': 'string',
}) -%}

{#- consent_updated: the app's notification or privacy settings (properties channel, status) -#}
{%- set event_types = ['app_open', 'login', 'lesson_completed', 'quiz_submitted', 'push_token_registered',
    'consent_updated'] -%}
{#- Segment track names (snake_cased) that are one of the event types above ("Application Opened" is
    the Segment mobile spec's lifecycle event) -#}
{%- set segment_tracks = {
    'app_open': 'app_open', 'application_opened': 'app_open',
    'login': 'login', 'logged_in': 'login', 'signed_in': 'login',
    'lesson_completed': 'lesson_completed', 'quiz_submitted': 'quiz_submitted',
    'push_token_registered': 'push_token_registered', 'consent_updated': 'consent_updated',
} -%}

with

new_records as (

    select * from {{ ref('brz_app__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields, passthrough=['payload']) }}

),

classified as (

    select
        *,
        case when {{ cdp.segment_message_detected() }} then 'segment' else 'native' end as message_format
    from extracted

),

unified as (

    -- one set of raw columns whatever the format: the native SDK's fields, or the Segment message's
    select
        record_key,
        batch_id,
        position,
        file_name,
        parse_error,
        is_valid_json,
        is_json_object,
        message_format,
        {{ cdp.by_format('payload__messageid', 'payload__event_id') }} as event_id_raw,
        {{ cdp.by_format('payload__context__device__id', 'payload__device_id') }} as device_id_raw,
        {{ cdp.by_format('payload__userid', 'payload__user_id') }} as user_id_raw,
        {{ cdp.by_format(cdp.segment_anonymous_id(), 'cast(null as ' ~ dbt.type_string() ~ ')') }} as anonymous_id_raw,
        {{ cdp.by_format(cdp.segment_event_type(segment_tracks), 'payload__event_name') }} as event_type_raw,
        {{ cdp.by_format('coalesce(payload__event, payload__name)', 'payload__event_name') }} as event_name,
        {{ cdp.by_format('lower(payload__context__os__name)', 'payload__platform') }} as platform,
        {{ cdp.by_format('payload__context__app__version', 'payload__app_version') }} as app_version,
        {{ cdp.by_format('payload__context__os__version', 'payload__os_version') }} as os_version,
        {{ cdp.by_format(cdp.segment_trait('email'), 'payload__properties__email') }} as email_raw,
        {{ cdp.by_format(cdp.segment_trait('phone'), 'cast(null as ' ~ dbt.type_string() ~ ')') }} as phone_raw,
        case when message_format = 'segment' then coalesce(payload__traits__firstname, payload__traits__first_name) end
            as first_name,
        case when message_format = 'segment' then coalesce(payload__traits__lastname, payload__traits__last_name) end
            as last_name,
        case when message_format = 'segment' then coalesce(payload__traits__country, payload__traits__address__country,
            payload__context__traits__address__country) end as country_raw,
        -- a Segment message's time is its timestamp, else when the API received it
        {{ cdp.by_format('coalesce(payload__timestamp, payload__receivedat)', 'payload__timestamp') }} as occurred_at_raw,
        {{ cdp.by_format('payload__sentat', 'payload__sent_at') }} as sent_at_raw,
        payload__properties__course,
        payload__properties__lesson_id,
        payload__properties__quiz_id,
        payload__properties__method,
        payload__properties__push_token,
        payload__properties__channel,
        payload__properties__status,
        payload__properties__duration_s,
        payload__properties__score,
        -- a Segment message's own properties, kept whole (custom events have nothing else)
        case when message_format = 'segment' then {{ cdp.json_subdocument('payload', 'properties') }} end
            as segment_properties,
        payload__type,
        payload__event,
        payload__messageid,
        payload__userid,
        payload__anonymousid,
        payload__previousid,
        payload__groupid,
        payload__timestamp,
        payload__receivedat,
        landed_at,
        bronze_loaded_at
    from classified

),

country_codes as (

    select * from {{ cdp.country_calling_codes_lookup() }}

),

typed as (

    select
        -- lineage
        unified.record_key,
        unified.batch_id,
        unified.position,
        unified.file_name,
        unified.parse_error,
        unified.is_valid_json,
        unified.is_json_object,
        unified.message_format,

        -- ids
        nullif(trim(unified.event_id_raw), '') as event_id,
        nullif(trim(unified.device_id_raw), '') as device_id,
        nullif(trim(unified.user_id_raw), '') as user_id,
        nullif(trim(unified.anonymous_id_raw), '') as anonymous_id,

        -- event
        nullif(trim(unified.event_type_raw), '') as event_type,
        unified.event_name,
        unified.platform,
        unified.app_version,
        unified.os_version,
        unified.payload__properties__course as course,
        unified.payload__properties__lesson_id as lesson_id,
        unified.payload__properties__quiz_id as quiz_id,
        unified.payload__properties__method as login_method,
        unified.payload__properties__push_token as push_token,
        lower(nullif(trim(unified.payload__properties__channel), '')) as consent_channel,
        lower(nullif(trim(unified.payload__properties__status), '')) as consent_status,
        unified.payload__type as message_type,
        unified.payload__groupid as group_id,
        case when unified.payload__type = 'alias' then unified.payload__previousid end as previous_id,
        unified.segment_properties,

        -- numerics
        cast(round({{ cdp.try_cast('unified.payload__properties__duration_s', 'double') }}) as {{ dbt.type_bigint() }}) as duration_seconds,
        {{ cdp.try_cast('unified.payload__properties__score', 'double') }} as quiz_score,

        -- identity (native login; Segment identify traits, context.traits, properties)
        {{ cdp.normalize_email('unified.email_raw') }} as email,
        unified.email_raw,
        {{ cdp.normalize_phone_with_calling_code('unified.phone_raw', 'country_codes.calling_code', 'country_codes.trunk_prefix') }} as phone,
        unified.phone_raw,
        unified.first_name,
        unified.last_name,
        unified.country_raw,

        -- timestamps (the device's offset applied: UTC)
        unified.occurred_at_raw,
        {{ cdp.parse_timestamp('unified.occurred_at_raw') }} as occurred_at,
        {{ cdp.parse_timestamp('unified.sent_at_raw') }} as sent_at,
        -- when the ingestion API received a Segment message; a landed file was received when landed
        coalesce({{ cdp.parse_timestamp('unified.payload__receivedat') }}, unified.landed_at) as received_at,
        unified.landed_at,
        unified.bronze_loaded_at,

        -- the Segment envelope, for the checks
        unified.payload__type,
        unified.payload__event,
        unified.payload__messageid,
        unified.payload__userid,
        unified.payload__anonymousid,
        unified.payload__previousid,
        unified.payload__groupid,
        unified.payload__timestamp,
        unified.payload__receivedat

    from unified
    left join country_codes
        on country_codes.lookup_key = {{ cdp.country_lookup_key('unified.country_raw') }}

),

validated as (

    select
        {{ cdp.star_except(['payload__type', 'payload__event', 'payload__messageid', 'payload__userid',
            'payload__anonymousid', 'payload__previousid', 'payload__groupid', 'payload__timestamp',
            'payload__receivedat'], 'typed') }},
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            case when message_format = 'segment' then {{ cdp.segment_invalid_reason() }} end,
            case when message_format = 'native' then {{ cdp.missing_required_field({
                'event_id': 'event_id', 'event_type': 'event_name', 'device_id': 'device_id',
                'occurred_at_raw': 'timestamp'}) }} end,
            case
                when message_format = 'native' and event_type not in ('{{ event_types | join("', '") }}')
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
