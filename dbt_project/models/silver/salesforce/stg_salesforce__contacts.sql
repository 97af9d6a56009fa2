{#- Every accepted Salesforce Contact version: one row per Id + LastModifiedDate, typed and normalized. -#}
{{ config(materialized='view') }}

with

checked as (

    select * from {{ ref('int_salesforce__checked') }}
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        contact_version_id,
        contact_version_key,
        contact_id,

        -- contact
        first_name,
        last_name,
        birth_date,
        email,
        email_raw,
        phone,
        phone_raw,
        mobile_phone,
        mobile_phone_raw,
        mailing_street,
        mailing_city,
        mailing_state,
        mailing_postal_code,
        mailing_country,

        -- admissions funnel
        program_interest,
        application_stage,
        enrollment_status,

        -- booleans
        has_opted_out_of_email,

        -- timestamps
        created_at,
        last_modified_at,
        landed_at,
        bronze_loaded_at,

        -- lineage
        export_format,
        record_key,
        batch_id,
        position,
        file_name

    from checked

)

select * from renamed
