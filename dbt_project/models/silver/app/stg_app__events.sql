{#- Accepted mobile app events, native or Segment-spec (message_format): typed, timestamps in UTC, one row per event_id. -#}
{{ config(materialized='view') }}

with

checked as (

    select * from {{ ref('int_app__checked') }}
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        event_id,
        device_id,
        user_id,
        anonymous_id,

        -- event
        event_type,
        event_name,
        message_format,
        message_type,
        platform,
        app_version,
        os_version,
        course,
        lesson_id,
        quiz_id,
        login_method,
        push_token,
        consent_channel,
        consent_status,
        group_id,
        previous_id,
        segment_properties,

        -- numerics
        duration_seconds,
        quiz_score,

        -- identity
        email,
        email_raw,
        phone,
        phone_raw,
        first_name,
        last_name,
        country_raw,

        -- timestamps
        occurred_at,
        sent_at,
        received_at,
        landed_at,
        bronze_loaded_at,

        -- lineage
        record_key,
        batch_id,
        position,
        file_name

    from checked

)

select * from renamed
