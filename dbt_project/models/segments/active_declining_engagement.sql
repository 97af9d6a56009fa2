{#- Students still with us whose engagement halved: for the daily student-success report. -#}
{{ config(meta={'segment': {
    'name': 'Active student, declining engagement',
    'description': 'Enrolled and active students with engagement in the last 30 days under half of the 30 days before (at least 4 engagement events then).',
    'kind': 'batch',
    'owner': 'student-success',
    'destinations': ['salesforce'],
}}) }}

with

students as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage in ('enrolled', 'active_student')

),

engagement as (

    select * from {{ ref('engagement_scores') }}

),

final as (

    select s.profile_id
    from students as s
    inner join engagement as e
        on e.profile_id = s.profile_id
    -- a baseline of a few events, so that one quiet month after a single login is not a decline
    where e.engagement_trend = 'declining'
        and e.activity_prev_30d >= 4

)

select * from final
