{#-
    The unified event stream: one row per accepted event of every source, with the identifiers that
    identity stitching needs in common columns and the source-specific rest in `properties` (JSON).
    `properties` holds what segments and scoring use; bulky, rarely used fields (user agents, full
    URLs, send times) stay in the staging models, one join away through record_key: at 10M events
    every 100 bytes of JSON cost about 2 s to write.
    Web and app rows may be native tracker events or Segment-spec messages (the ingestion API): the
    latter carry their track/page/screen name in properties.event_name and a `segment` object
    (type, group_id, previous_id, their own properties), null on native rows.
    Incremental: each source adds the rows bronze loaded after the last ones it already holds.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at'), cluster_by=cdp.bigquery_cluster_by(['source', 'event_type'])) }}

{%- set null_string = 'cast(null as ' ~ dbt.type_string() ~ ')' -%}

with

web as (

    select
        event_id,
        'web' as source,
        event_type,
        occurred_at,
        received_at,
        landed_at,
        anonymous_id,
        session_id,
        {{ null_string }} as device_id,
        email,
        phone,
        {{ null_string }} as crm_id,
        user_id,
        {{ cdp.json_build_object([
            'category', 'event_category', 'page_path', 'page_path', 'page_title', 'page_title',
            'page_referrer', 'page_referrer',
            'utm_source', 'utm_source', 'utm_medium', 'utm_medium', 'utm_campaign', 'utm_campaign',
            'utm_term', 'utm_term', 'utm_content', 'utm_content',
            'program', 'program', 'brochure_id', 'brochure_id', 'form_id', 'form_id',
            'first_name', 'first_name', 'last_name', 'last_name', 'country', 'country_raw',
            'fingerprint_id', 'fingerprint_id', 'channel', 'consent_channel', 'status', 'consent_status',
            'event_name', "case when message_format = 'segment' then event_name end",
            'segment', cdp.segment_event_properties('event_category'),
        ]) }} as properties,
        batch_id,
        record_key,
        bronze_loaded_at
    from {{ ref('stg_web__events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = 'web'") }}
    {%- endif %}

),

app as (

    select
        event_id,
        'app' as source,
        event_type,
        occurred_at,
        received_at,
        landed_at,
        anonymous_id,
        {{ null_string }} as session_id,
        device_id,
        email,
        phone,
        {{ null_string }} as crm_id,
        user_id,
        {{ cdp.json_build_object([
            'platform', 'platform', 'app_version', 'app_version', 'os_version', 'os_version',
            'course', 'course', 'lesson_id', 'lesson_id', 'duration_seconds', 'duration_seconds',
            'quiz_id', 'quiz_id', 'quiz_score', 'quiz_score', 'login_method', 'login_method',
            'push_token', 'push_token', 'channel', 'consent_channel', 'status', 'consent_status',
            'first_name', 'first_name', 'last_name', 'last_name', 'country', 'country_raw',
            'event_name', "case when message_format = 'segment' then event_name end",
            'segment', cdp.segment_event_properties('message_type'),
        ]) }} as properties,
        batch_id,
        record_key,
        bronze_loaded_at
    from {{ ref('stg_app__events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = 'app'") }}
    {%- endif %}

),

salesforce as (

    select
        contact_version_id as event_id,
        'salesforce' as source,
        'crm_contact_updated' as event_type,
        last_modified_at as occurred_at,
        landed_at as received_at,
        landed_at,
        {{ null_string }} as anonymous_id,
        {{ null_string }} as session_id,
        {{ null_string }} as device_id,
        email,
        -- the mobile only: it is the person's own number (and the one WhatsApp knows them by); the
        -- Phone field is often a household or office line shared by several people (in properties)
        mobile_phone as phone,
        contact_id as crm_id,
        {{ null_string }} as user_id,
        {{ cdp.json_build_object([
            'first_name', 'first_name', 'last_name', 'last_name', 'birth_date', 'birth_date',
            'phone', 'phone', 'mobile_phone', 'mobile_phone',
            'mailing_street', 'mailing_street', 'mailing_city', 'mailing_city', 'mailing_state', 'mailing_state',
            'mailing_postal_code', 'mailing_postal_code', 'mailing_country', 'mailing_country',
            'program_interest', 'program_interest', 'application_stage', 'application_stage',
            'enrollment_status', 'enrollment_status', 'has_opted_out_of_email', 'has_opted_out_of_email',
            'created_at', 'created_at', 'export_format', 'export_format',
        ]) }} as properties,
        batch_id,
        record_key,
        bronze_loaded_at
    from {{ ref('stg_salesforce__contacts') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = 'salesforce'") }}
    {%- endif %}

),

email as (

    select
        event_id,
        'email' as source,
        'email_' || event_type as event_type,
        occurred_at,
        landed_at as received_at,
        landed_at,
        {{ null_string }} as anonymous_id,
        {{ null_string }} as session_id,
        {{ null_string }} as device_id,
        email,
        {{ null_string }} as phone,
        {{ null_string }} as crm_id,
        {{ null_string }} as user_id,
        {{ cdp.json_build_object([
            'message_id', 'message_id', 'campaign_id', 'campaign_id', 'campaign_name', 'campaign_name',
            'template_id', 'template_id', 'categories', 'categories', 'url', 'clicked_url',
            'bounce_type', 'bounce_type', 'bounce_status', 'bounce_status', 'reason', 'reason',
        ]) }} as properties,
        batch_id,
        record_key,
        bronze_loaded_at
    from {{ ref('stg_email__events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = 'email'") }}
    {%- endif %}

),

whatsapp as (

    select
        message_id as event_id,
        'whatsapp' as source,
        'whatsapp_message_received' as event_type,
        received_at as occurred_at,
        received_at,
        landed_at,
        {{ null_string }} as anonymous_id,
        {{ null_string }} as session_id,
        {{ null_string }} as device_id,
        {{ null_string }} as email,
        phone,
        {{ null_string }} as crm_id,
        {{ null_string }} as user_id,
        {{ cdp.json_build_object([
            'body', 'body', 'message_type', 'message_type', 'media_count', 'media_count',
            'media_url', 'media_url', 'media_content_type', 'media_content_type',
            'profile_name', 'profile_name', 'wa_id', 'wa_id', 'to_phone', 'to_phone',
            'is_opt_out_keyword', 'is_opt_out_keyword', 'is_opt_in_keyword', 'is_opt_in_keyword',
        ]) }} as properties,
        batch_id,
        record_key,
        bronze_loaded_at
    from {{ ref('stg_whatsapp__messages') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('bronze_loaded_at', "source = 'whatsapp'") }}
    {%- endif %}

),

unioned as (

    select * from web
    union all
    select * from app
    union all
    select * from salesforce
    union all
    select * from email
    union all
    select * from whatsapp

)

select * from unioned
