{#- Accepted SendGrid email events: typed, normalized email, one row per sg_event_id. -#}
{{ config(materialized='view') }}

with

checked as (

    select * from {{ ref('int_email__checked') }}
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        event_id,
        message_id,
        smtp_id,
        campaign_id,
        template_id,

        -- event
        event_type,
        campaign_name,
        categories,
        clicked_url,
        user_agent,
        ip_address,
        bounce_type,
        bounce_status,
        reason,
        response,

        -- identity
        email,
        email_raw,

        -- timestamps
        occurred_at,
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
