{#- Accepted mobile app events: typed, timestamps in UTC, one row per event_id. -#}
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

        -- event
        event_type,
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

        -- numerics
        duration_seconds,
        quiz_score,

        -- identity
        email,
        email_raw,

        -- timestamps
        occurred_at,
        sent_at,
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
