{#-
    Every Salesforce Contact record landed (REST JSON and Bulk CSV alike), parsed once into typed,
    normalized columns, and checked on its own: `invalid_reason` is null when it passes. A version is
    Id + LastModifiedDate: its id is `Id@LastModifiedDate` as written (the ground truth's record id),
    but the same version exported twice (JSON and CSV write datetimes differently) is one version, so
    int_salesforce__deduplicated compares `contact_version_key`, built on the parsed UTC time.
    Incremental over new bronze rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='append_new_columns',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{%- set payload_fields = {
    'Id': 'string', 'Email': 'string', 'Phone': 'string', 'MobilePhone': 'string',
    'FirstName': 'string', 'LastName': 'string', 'Birthdate': 'string',
    'MailingStreet': 'string', 'MailingCity': 'string', 'MailingState': 'string',
    'MailingPostalCode': 'string', 'MailingCountry': 'string',
    'Program_Interest__c': 'string', 'Application_Stage__c': 'string', 'Enrollment_Status__c': 'string',
    'HasOptedOutOfEmail': 'string', 'CreatedDate': 'string', 'LastModifiedDate': 'string',
} -%}

with

new_records as (

    select * from {{ ref('brz_salesforce__records') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at') }}
    {%- endif %}

),

extracted as (

    {{ cdp.select_payload_fields('new_records', payload_fields) }}

),

country_codes as (

    select * from {{ cdp.country_calling_codes_lookup() }}

),

typed as (

    select
        -- lineage
        extracted.record_key,
        extracted.batch_id,
        extracted.position,
        extracted.file_name,
        extracted.parse_error,
        extracted.is_valid_json,
        extracted.is_json_object,
        case when lower(extracted.file_name) like '%.csv' then 'bulk_csv' else 'rest_json' end as export_format,

        -- ids
        nullif(trim(extracted.payload__id), '') as contact_id,

        -- contact
        extracted.payload__firstname as first_name,
        extracted.payload__lastname as last_name,
        {{ cdp.try_cast('extracted.payload__birthdate', 'date') }} as birth_date,
        {{ cdp.normalize_email('extracted.payload__email') }} as email,
        extracted.payload__email as email_raw,
        {{ cdp.normalize_phone_with_calling_code('extracted.payload__phone', 'country_codes.calling_code', 'country_codes.trunk_prefix') }} as phone,
        extracted.payload__phone as phone_raw,
        {{ cdp.normalize_phone_with_calling_code('extracted.payload__mobilephone', 'country_codes.calling_code', 'country_codes.trunk_prefix') }} as mobile_phone,
        extracted.payload__mobilephone as mobile_phone_raw,
        extracted.payload__mailingstreet as mailing_street,
        extracted.payload__mailingcity as mailing_city,
        extracted.payload__mailingstate as mailing_state,
        extracted.payload__mailingpostalcode as mailing_postal_code,
        extracted.payload__mailingcountry as mailing_country,

        -- admissions funnel
        extracted.payload__program_interest__c as program_interest,
        extracted.payload__application_stage__c as application_stage,
        extracted.payload__enrollment_status__c as enrollment_status,

        -- booleans (JSON true/false, CSV 'true'/'false')
        case
            when lower(extracted.payload__hasoptedoutofemail) in ('true', '1') then true
            when lower(extracted.payload__hasoptedoutofemail) in ('false', '0') then false
        end as has_opted_out_of_email,

        -- timestamps
        extracted.payload__lastmodifieddate as last_modified_at_raw,
        {{ cdp.parse_timestamp('extracted.payload__createddate') }} as created_at,
        {{ cdp.parse_timestamp('extracted.payload__lastmodifieddate') }} as last_modified_at,
        extracted.landed_at,
        extracted.bronze_loaded_at

    from extracted
    left join country_codes
        on country_codes.lookup_key = {{ cdp.country_lookup_key('extracted.payload__mailingcountry') }}

),

versioned as (

    select
        typed.*,
        contact_id || '@' || trim(last_modified_at_raw) as contact_version_id,
        -- the version whichever export it came from (+0000 in JSON, Z in CSV): the deduplication key
        contact_id || '@' || {{ cdp.format_utc_timestamp_iso('last_modified_at') }} as contact_version_key
    from typed

),

validated as (

    select
        versioned.*,
        coalesce(
            {{ cdp.structural_invalid_reasons() }},
            {{ cdp.missing_required_field({
                'contact_id': 'Id', 'last_name': 'LastName', 'last_modified_at_raw': 'LastModifiedDate'}) }},
            case
                when length(contact_id) <> 18 or contact_id not like '003%'
                    then 'Id is not an 18-character Contact id (prefix 003): ' || {{ cdp.quoted_value('contact_id') }}
            end,
            case
                when last_modified_at is null
                    then 'LastModifiedDate is not a valid ISO 8601 time: ' || {{ cdp.quoted_value('last_modified_at_raw') }}
            end
        ) as invalid_reason
    from versioned

)

select * from validated
