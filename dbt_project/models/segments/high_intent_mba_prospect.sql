{#- Inquiries reading up on the MBA this week, whom we may email: the advisor calls, the scholarship mail goes out. -#}
{{ config(meta={'segment': {
    'name': 'High-intent MBA prospect',
    'description': 'At least 3 MBA page views in the 7 days before as-of, lifecycle stage inquiry, email consent allows contact.',
    'kind': 'realtime',
    'owner': 'admissions-marketing',
    'destinations': ['salesforce', 'email', 'twilio'],
}}) }}

{%- set min_page_views = 3 %}

with

mba_page_views as (

    -- /mba and every page under it (/mba/curriculum...)
    select
        profile_id,
        count(*) as mba_page_views_7d
    from {{ ref('profile_events') }}
    where source = 'web'
        and event_type = 'page_view'
        and occurred_at > {{ cdp.as_of(days_before=7) }}
        and occurred_at <= {{ cdp.as_of() }}
        and {{ cdp.regex_full_match(cdp.json_text('properties', 'page_path'), '/mba(/.*)?') }}
    group by profile_id

),

inquiries as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage = 'inquiry'

),

email_allowed as (

    select profile_id from {{ ref('consent_current') }}
    where channel = 'email' and can_contact

),

final as (

    select v.profile_id
    from mba_page_views as v
    inner join inquiries as i
        on i.profile_id = v.profile_id
    inner join email_allowed as c
        on c.profile_id = v.profile_id
    where v.mba_page_views_7d >= {{ min_page_views }}

)

select * from final
