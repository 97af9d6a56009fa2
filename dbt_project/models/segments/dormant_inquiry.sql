{#- Inquiries gone quiet for two months: a re-engagement campaign before they are lost. -#}
{{ config(meta={'segment': {
    'name': 'Dormant inquiry',
    'description': 'Known and inquiry profiles without engagement in the 60 days before as-of, whom we may email.',
    'kind': 'batch',
    'owner': 'admissions-marketing',
    'destinations': ['email'],
}}) }}

with

prospects as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage in ('known', 'inquiry')

),

engagement as (

    select profile_id, last_engaged_at from {{ ref('engagement_scores') }}

),

email_allowed as (

    select profile_id from {{ ref('consent_current') }}
    where channel = 'email' and can_contact

),

final as (

    select p.profile_id
    from prospects as p
    inner join engagement as e
        on e.profile_id = p.profile_id
    inner join email_allowed as c
        on c.profile_id = p.profile_id
    where e.last_engaged_at <= {{ cdp.as_of(days_before=60) }}

)

select * from final
