{#- Alumni who still show up: ambassadors, referrals, executive education. -#}
{{ config(meta={'segment': {
    'name': 'Engaged alumni',
    'description': 'Alumni with an engagement score of at least 30.',
    'kind': 'batch',
    'owner': 'alumni-relations',
    'destinations': ['salesforce', 'email'],
}}) }}

with

alumni as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage = 'alumni'

),

engagement as (

    select profile_id, engagement_score from {{ ref('engagement_scores') }}

),

final as (

    select a.profile_id
    from alumni as a
    inner join engagement as e
        on e.profile_id = a.profile_id
    where e.engagement_score >= 30

)

select * from final
