{#- Visitors who never told us who they are but browse like applicants: personalize the site for them. -#}
{{ config(meta={'segment': {
    'name': 'Anonymous visitor, high intent',
    'description': 'Anonymous profiles with at least 5 page views or a brochure download in the 7 days before as-of, whose analytics consent allows it (website personalization through the API).',
    'kind': 'realtime',
    'owner': 'web-marketing',
    'destinations': ['api'],
}}) }}

with

anonymous as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage = 'anonymous'

),

engagement as (

    select profile_id, page_views_7d, brochure_downloads_7d from {{ ref('engagement_scores') }}

),

analytics_allowed as (

    select profile_id from {{ ref('consent_current') }}
    where channel = 'analytics' and can_contact

),

final as (

    select a.profile_id
    from anonymous as a
    inner join engagement as e
        on e.profile_id = a.profile_id
    inner join analytics_allowed as c
        on c.profile_id = a.profile_id
    where e.page_views_7d >= 5
        or e.brochure_downloads_7d > 0

)

select * from final
