{#-
    What happened on each anchor identifier, per source: counts, first/last seen, consent signals and
    the latest contact traits (from the CRM, web forms, app logins and Segment identify calls). Every
    event belongs to the profile of its anchor (its strongest identifier; none when that is
    blocklisted), so gold profiles are a roll-up of these rows: 10M events become a few million rows
    that are cheap to regroup when profiles merge.
    Incremental: new events are aggregated and combined with the rows they touch; sums, min/max and
    "latest by (time, event_id)" combine exactly, so incremental runs equal a full refresh.
-#}
{{ config(
    materialized='incremental',
    unique_key='anchor_source_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
) }}

{%- set counts = {
    'page_views': "event_type = 'page_view'",
    'brochure_downloads': "event_type = 'brochure_download'",
    'form_submits': "event_type = 'form_submit'",
    'app_sessions': "event_type in ('app_open', 'login')",
    'lessons_completed': "event_type = 'lesson_completed'",
    'quizzes_submitted': "event_type = 'quiz_submitted'",
    'email_opens': "event_type = 'email_open'",
    'email_clicks': "event_type = 'email_click'",
    'email_bounces': "event_type = 'email_bounce'",
    'email_unsubscribes': "event_type = 'email_unsubscribe'",
    'email_spam_reports': "event_type = 'email_spamreport'",
} -%}
{%- set trait_keys = ['first_name', 'last_name', 'birth_date', 'mailing_city', 'mailing_postal_code',
    'mailing_country', 'country', 'program_interest', 'application_stage', 'enrollment_status',
    'has_opted_out_of_email'] -%}
{%- set traits = ['first_name', 'last_name', 'email', 'phone', 'birth_date', 'city', 'postal_code', 'country',
    'program_interest', 'application_stage', 'enrollment_status', 'has_opted_out_of_email'] -%}

with

new_events as (

    select * from {{ ref('events') }}
    {% if is_incremental() -%}
    where bronze_loaded_at > {{ cdp.watermark('last_bronze_loaded_at') }}
    {%- endif %}

),

anchored as (

    select
        {{ cdp.event_anchor_type() }} as anchor_type,
        {{ cdp.event_anchor_value() }} as anchor_value,
        e.*
    from new_events as e

),

activity as (

    -- counts and consent signals over every event; JSON is read only on quiz and WhatsApp rows
    select
        anchor_type,
        anchor_value,
        source,
        count(*) as event_count,
        {%- for name, condition in counts.items() %}
        count(case when {{ condition }} then 1 end) as {{ name }},
        {%- endfor %}
        sum(case when event_type = 'quiz_submitted' then {{ cdp.try_cast(cdp.json_text('properties', 'quiz_score'), 'double') }} end)
            as quiz_score_sum,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at,
        max(case when event_type in ('email_unsubscribe', 'email_spamreport') then occurred_at end) as last_email_opt_out_at,
        max(case when source = 'whatsapp' and {{ cdp.json_text('properties', 'is_opt_out_keyword') }} = 'true'
            then occurred_at end) as last_whatsapp_opt_out_at,
        max(case when source = 'whatsapp' and {{ cdp.json_text('properties', 'is_opt_in_keyword') }} = 'true'
            then occurred_at end) as last_whatsapp_opt_in_at,
        max(bronze_loaded_at) as last_bronze_loaded_at
    from anchored
    where anchor_type is not null
    group by anchor_type, anchor_value, source

),

trait_events as (

    -- contact traits on the events that carry them (CRM versions, web forms, app logins, Segment
    -- identify calls), with one JSON parse per event
    select
        anchor_type,
        anchor_value,
        source,
        email,
        phone,
        {{ cdp.json_text_list('properties', trait_keys) }} as trait_values,
        {{ cdp.timestamp_sort_key('occurred_at', 'event_id') }} as traits_sort_key
    from anchored
    where anchor_type is not null
        and (source = 'salesforce' or event_type in ('form_submit', 'login', 'identify'))

),

latest_traits as (

    -- the latest trait event per anchor and source, whole
    select
        anchor_type,
        anchor_value,
        source,
        max(traits_sort_key) as traits_sort_key,
        max_by(trait_values, traits_sort_key) as trait_values,
        max_by(email, traits_sort_key) as email,
        max_by(phone, traits_sort_key) as phone
    from trait_events
    group by anchor_type, anchor_value, source

),

aggregated as (

    select
        a.source || '|' || {{ cdp.identifier_key('a.anchor_type', 'a.anchor_value') }} as anchor_source_key,
        {{ cdp.identifier_key('a.anchor_type', 'a.anchor_value') }} as anchor_key,
        a.source,
        a.event_count,
        {%- for name in counts.keys() %}
        a.{{ name }},
        {%- endfor %}
        a.quiz_score_sum,
        a.first_seen_at,
        a.last_seen_at,
        a.last_email_opt_out_at,
        a.last_whatsapp_opt_out_at,
        a.last_whatsapp_opt_in_at,
        t.traits_sort_key,
        {{ cdp.list_item('t.trait_values', 0) }} as first_name,
        {{ cdp.list_item('t.trait_values', 1) }} as last_name,
        t.email,
        t.phone,
        {{ cdp.try_cast(cdp.list_item('t.trait_values', 2), 'date') }} as birth_date,
        {{ cdp.list_item('t.trait_values', 3) }} as city,
        {{ cdp.list_item('t.trait_values', 4) }} as postal_code,
        -- CRM MailingCountry, or the web form's country
        coalesce({{ cdp.list_item('t.trait_values', 5) }}, {{ cdp.list_item('t.trait_values', 6) }}) as country,
        {{ cdp.list_item('t.trait_values', 7) }} as program_interest,
        {{ cdp.list_item('t.trait_values', 8) }} as application_stage,
        {{ cdp.list_item('t.trait_values', 9) }} as enrollment_status,
        {{ cdp.try_cast(cdp.list_item('t.trait_values', 10), 'boolean') }} as has_opted_out_of_email,
        a.last_bronze_loaded_at,
        {{ cdp.current_utc_timestamp() }} as updated_at
    from activity as a
    left join latest_traits as t
        on t.anchor_type = a.anchor_type
        and t.anchor_value = a.anchor_value
        and t.source = a.source

),

{% if is_incremental() %}

combined as (

    select
        n.anchor_source_key,
        n.anchor_key,
        n.source,
        n.event_count + coalesce(o.event_count, 0) as event_count,
        {%- for name in counts.keys() %}
        n.{{ name }} + coalesce(o.{{ name }}, 0) as {{ name }},
        {%- endfor %}
        case
            when n.quiz_score_sum is null then o.quiz_score_sum
            else n.quiz_score_sum + coalesce(o.quiz_score_sum, 0)
        end as quiz_score_sum,
        least(n.first_seen_at, coalesce(o.first_seen_at, n.first_seen_at)) as first_seen_at,
        greatest(n.last_seen_at, coalesce(o.last_seen_at, n.last_seen_at)) as last_seen_at,
        {%- for name in ['last_email_opt_out_at', 'last_whatsapp_opt_out_at', 'last_whatsapp_opt_in_at'] %}
        coalesce(greatest(n.{{ name }}, o.{{ name }}), n.{{ name }}, o.{{ name }}) as {{ name }},
        {%- endfor %}
        coalesce(greatest(n.traits_sort_key, o.traits_sort_key), n.traits_sort_key, o.traits_sort_key) as traits_sort_key,
        {%- for trait in traits %}
        case
            when o.traits_sort_key is null or n.traits_sort_key > o.traits_sort_key then n.{{ trait }}
            else o.{{ trait }}
        end as {{ trait }},
        {%- endfor %}
        n.last_bronze_loaded_at,
        n.updated_at
    from aggregated as n
    left join {{ this }} as o
        on o.anchor_source_key = n.anchor_source_key

)

{% else %}

combined as (

    select * from aggregated

)

{% endif %}

select * from combined
