{#- Prospects ranked by engagement: the advisors' call list, best first. -#}
{{ config(meta={'segment': {
    'name': 'Engaged prospect',
    'description': 'Known, inquiry and applicant profiles with an engagement score of at least 60; score = the engagement score (0..100).',
    'kind': 'scored',
    'owner': 'admissions',
    'destinations': ['salesforce'],
}}) }}

with

prospects as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage in ('known', 'inquiry', 'applicant')

),

engagement as (

    select profile_id, engagement_score from {{ ref('engagement_scores') }}

),

final as (

    select
        p.profile_id,
        e.engagement_score as score
    from prospects as p
    inner join engagement as e
        on e.profile_id = p.profile_id
    where e.engagement_score >= 60

)

select * from final
