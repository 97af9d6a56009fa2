{#- Accepted web events, native or Segment-spec (message_format): typed, normalized, one row per event_id. -#}
{{ config(materialized='view') }}

with

checked as (

    select * from {{ ref('int_web__checked') }}
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        event_id,
        anonymous_id,
        user_id,
        session_id,
        fingerprint_id,

        -- event
        event_type,
        event_category,
        event_name,
        message_format,
        program,
        brochure_id,
        form_id,
        consent_channel,
        consent_status,
        group_id,
        previous_id,
        segment_properties,

        -- page and campaign
        page_url,
        page_path,
        page_title,
        page_referrer,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        user_agent,

        -- identity traits
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
