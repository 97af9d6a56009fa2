{#-
    The golden record: one row per resolved person (profile).
    - Contact fields come from the CRM (the most recently modified Contact of the profile), field by
      field falling back to the most recent other source (web form, app login), then to the most
      recently seen identifier of that type.
    - Enrollment status and application stage come from the CRM only.
    - Behaviour (page views, lessons, quizzes, email engagement) comes from web, app and email events.
    - Consent (email_consent, whatsapp_consent) is gold.consent_current's status for the channel: the
      most restrictive across every merged identity (one opted-out email address or one WhatsApp STOP
      opts the whole profile out). Every consent statement is an event of the profile, so a profile
      that gets one is recomputed here (assert_profile_consent_matches_consent_current checks it).
    - identity_confidence: 1 for a single identifier; otherwise the weakest link type the profile is
      built from (var cdp__identity_link_confidence), times the match score when probabilistic
      matching merged it.
-#}
{{ config(
    materialized='incremental',
    unique_key='profile_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    cluster_by=cdp.bigquery_cluster_by(['profile_id']),
) }}

{%- set confidence = cdp.identity_link_confidence() %}
{#- the order of crm_values below: the first eight are these -#}
{%- set contact_traits = ['first_name', 'last_name', 'email', 'phone', 'birth_date', 'city', 'postal_code', 'country'] %}
{%- set components_relation = ref('int_identity__components') %}
{%- set profile_map_relation = ref('int_identity__profile_map') %}

{%- if execute and flags.WHICH in ('run', 'build') and is_incremental() %}
    {#- a profile whose id is no longer a live profile id (merged into an older one) goes -#}
    {%- do run_query('delete from ' ~ this ~ ' as p
        where not exists (select 1 from ' ~ components_relation ~ ' as c where c.component_id = p.profile_id)
            or exists (select 1 from ' ~ profile_map_relation ~ ' as m
                       where m.component_id = p.profile_id and m.profile_id <> p.profile_id)') %}
{%- endif %}

with

activity as (

    select * from {{ ref('int_identity__anchor_activity') }}

),

components as (

    select * from {{ ref('int_identity__components') }}
    where component_id is not null

),

profile_map as (

    select * from {{ ref('int_identity__profile_map') }}

),

consent as (

    select * from {{ ref('consent_current') }}
    where channel in ('email', 'whatsapp')

),

{% if is_incremental() %}
{%- set since = cdp.watermark('computed_at') %}

changed_components as (

    -- what changed since the last run: relabelled components, new activity, probabilistic merges,
    -- and any component that has no profile yet (self-healing, e.g. after a merge was undone)
    select component_id from components
    where updated_at > {{ since }}
    union distinct
    select c.component_id
    from activity as a
    inner join components as c
        on c.identifier_key = a.anchor_key
    where a.updated_at > {{ since }}
    union distinct
    select component_id from profile_map
    union distinct
    -- a probabilistic merge that no longer holds (auto-merge turned off, a review rejected): the
    -- survivor is no longer in profile_map but still holds the retired profile's people
    select profile_id from {{ this }}
    where is_probabilistic_merge
    union distinct
    select c.component_id
    from components as c
    where not exists (select 1 from {{ this }} as p where p.profile_id = c.component_id)

),

affected_profiles as (

    select distinct coalesce(m.profile_id, cc.component_id) as profile_id
    from changed_components as cc
    left join profile_map as m
        on m.component_id = cc.component_id

),

{% endif %}

identifiers as (

    select * from {{ ref('profile_identifiers') }}
    {% if is_incremental() -%}
    where profile_id in (select profile_id from affected_profiles)
    {%- endif %}

),

profile_activity as (

    select
        coalesce(m.profile_id, c.component_id) as profile_id,
        c.identifier_value as anchor_value,
        a.*
    from activity as a
    inner join components as c
        on c.identifier_key = a.anchor_key
    left join profile_map as m
        on m.component_id = c.component_id
    {% if is_incremental() -%}
    where coalesce(m.profile_id, c.component_id) in (select profile_id from affected_profiles)
    {%- endif %}

),

crm_traits as (

    -- the most recently modified CRM contact of the profile, whole (one max_by of a list, not one per field)
    select
        profile_id,
        max_by(
            [first_name, last_name, email, phone, cast(birth_date as {{ dbt.type_string() }}), city, postal_code,
             country, program_interest, application_stage, enrollment_status, anchor_value],
            traits_sort_key
        ) as crm_values,
        -- one activity row per anchor and source: the Salesforce rows are the profile's contacts
        count(*) as crm_contacts
    from profile_activity
    where source = 'salesforce'
    group by profile_id

),

latest_traits as (

    -- field by field, the latest non-null value of any trait event (CRM, web form, app login)
    select
        profile_id,
        {%- for trait in contact_traits %}
        max_by({{ trait }}, case when {{ trait }} is not null then traits_sort_key end) as {{ trait }},
        {%- endfor %}
        max_by(source, traits_sort_key) as latest_trait_source
    from profile_activity
    where traits_sort_key is not null
    group by profile_id

),

behaviour as (

    select
        profile_id,

        -- events per source and behaviour
        cast(sum(case when source = 'web' then event_count else 0 end) as {{ dbt.type_bigint() }}) as web_events,
        cast(sum(case when source = 'app' then event_count else 0 end) as {{ dbt.type_bigint() }}) as app_events,
        cast(sum(case when source = 'salesforce' then event_count else 0 end) as {{ dbt.type_bigint() }}) as crm_versions,
        cast(sum(case when source = 'email' then event_count else 0 end) as {{ dbt.type_bigint() }}) as email_events,
        cast(sum(case when source = 'whatsapp' then event_count else 0 end) as {{ dbt.type_bigint() }}) as whatsapp_messages,
        {%- for count in ['page_views', 'brochure_downloads', 'form_submits', 'app_sessions', 'lessons_completed',
            'quizzes_submitted', 'email_opens', 'email_clicks', 'email_bounces'] %}
        cast(sum({{ count }}) as {{ dbt.type_bigint() }}) as {{ count }},
        {%- endfor %}
        sum(quiz_score_sum) as quiz_score_sum,
        max(case when source = 'web' then last_seen_at end) as last_web_at,
        max(case when source = 'app' then last_seen_at end) as last_app_at,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at
    from profile_activity
    group by profile_id

),

rolled_up as (

    select
        b.*,

        -- contact: the CRM first, then the latest web form / app login (field by field)
        {%- for trait in contact_traits %}
        {%- if trait == 'birth_date' %}
        coalesce({{ cdp.try_cast(cdp.list_item('c.crm_values', loop.index0), 'date') }}, t.birth_date) as birth_date,
        {%- else %}
        coalesce({{ cdp.list_item('c.crm_values', loop.index0) }}, t.{{ trait }}) as {{ trait }},
        {%- endif %}
        {%- endfor %}
        case when c.profile_id is not null then 'salesforce' else t.latest_trait_source end as contact_source,
        {{ cdp.list_item('c.crm_values', 11) }} as crm_contact_id,
        coalesce(c.crm_contacts, 0) as crm_contacts,

        -- admissions funnel: the CRM only
        {{ cdp.list_item('c.crm_values', 8) }} as program_interest,
        {{ cdp.list_item('c.crm_values', 9) }} as application_stage,
        {{ cdp.list_item('c.crm_values', 10) }} as enrollment_status
    from behaviour as b
    left join crm_traits as c
        on c.profile_id = b.profile_id
    left join latest_traits as t
        on t.profile_id = b.profile_id

),

identifier_summary as (

    -- from the components: one row per identifier, so no distinct counting
    select
        coalesce(m.profile_id, c.component_id) as profile_id,
        count(*) as identifier_count,
        count(case when c.identifier_type not in ('anonymous_id', 'device_id') then 1 end) as known_identifier_count,
        min({{ cdp.identity_case('c.identifier_type', confidence, '1.0') }}) as weakest_link_confidence,
        max(case when c.is_shared then 1 else 0 end) as has_shared_identifier
    from components as c
    left join profile_map as m
        on m.component_id = c.component_id
    {% if is_incremental() -%}
    where coalesce(m.profile_id, c.component_id) in (select profile_id from affected_profiles)
    {%- endif %}
    group by coalesce(m.profile_id, c.component_id)

),

identifier_contacts as (

    select
        profile_id,
        max_by(case when identifier_type = 'email' then identifier_value end,
            case when identifier_type = 'email' then last_seen_at end) as latest_email,
        max_by(case when identifier_type = 'phone' then identifier_value end,
            case when identifier_type = 'phone' then last_seen_at end) as latest_phone,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at
    from identifiers
    group by profile_id

),

match_scores as (

    select profile_id, min(match_score) as match_score
    from profile_map
    group by profile_id

),

final as (

    select
        -- ids
        i.profile_id,
        r.crm_contact_id,

        -- contact
        r.first_name,
        r.last_name,
        coalesce(r.email, ic.latest_email) as email,
        coalesce(r.phone, ic.latest_phone) as phone,
        r.birth_date,
        r.city,
        r.postal_code,
        r.country,
        r.contact_source,

        -- admissions funnel
        r.program_interest,
        r.application_stage,
        r.enrollment_status,
        case
            when r.enrollment_status = 'Alumni' then 'alumni'
            when r.enrollment_status = 'Withdrawn' then 'withdrawn'
            when r.enrollment_status = 'Active' then 'active_student'
            when r.enrollment_status = 'Enrolled' then 'enrolled'
            when r.application_stage in ('Offer Made', 'Offer Accepted') then 'admitted'
            when r.application_stage in ('Application Started', 'Application Submitted') then 'applicant'
            when r.crm_contact_id is not null then 'inquiry'
            when i.known_identifier_count > 0 then 'known'
            else 'anonymous'
        end as lifecycle_stage,

        -- consent: gold.consent_current (most restrictive across the merged identities)
        coalesce(ec.status, 'unknown') as email_consent,
        coalesce(wc.status, 'unknown') as whatsapp_consent,

        -- behaviour
        coalesce(r.web_events, 0) as web_events,
        coalesce(r.app_events, 0) as app_events,
        coalesce(r.crm_versions, 0) as crm_versions,
        coalesce(r.email_events, 0) as email_events,
        coalesce(r.whatsapp_messages, 0) as whatsapp_messages,
        coalesce(r.page_views, 0) as page_views,
        coalesce(r.brochure_downloads, 0) as brochure_downloads,
        coalesce(r.form_submits, 0) as form_submits,
        coalesce(r.app_sessions, 0) as app_sessions,
        coalesce(r.lessons_completed, 0) as lessons_completed,
        coalesce(r.quizzes_submitted, 0) as quizzes_submitted,
        case when r.quizzes_submitted > 0 then r.quiz_score_sum / r.quizzes_submitted end as avg_quiz_score,
        coalesce(r.email_opens, 0) as email_opens,
        coalesce(r.email_clicks, 0) as email_clicks,
        coalesce(r.email_bounces, 0) as email_bounces,

        -- identity
        i.identifier_count,
        coalesce(r.crm_contacts, 0) as crm_contacts,
        case
            when i.identifier_count <= 1 then 1.0
            else i.weakest_link_confidence
        end * coalesce(s.match_score, 1.0) as identity_confidence,
        s.match_score is not null as is_probabilistic_merge,
        i.has_shared_identifier = 1 as has_shared_identifier,

        -- timestamps
        coalesce(r.first_seen_at, ic.first_seen_at) as first_seen_at,
        coalesce(r.last_seen_at, ic.last_seen_at) as last_seen_at,
        r.last_web_at,
        r.last_app_at,
        {{ cdp.current_utc_timestamp() }} as computed_at

    -- every profile has identifiers; a shared identifier that anchors no event has no activity
    from identifier_summary as i
    inner join identifier_contacts as ic
        on ic.profile_id = i.profile_id
    left join rolled_up as r
        on r.profile_id = i.profile_id
    left join match_scores as s
        on s.profile_id = i.profile_id
    left join consent as ec
        on ec.profile_id = i.profile_id
        and ec.channel = 'email'
    left join consent as wc
        on wc.profile_id = i.profile_id
        and wc.channel = 'whatsapp'

)

select * from final
