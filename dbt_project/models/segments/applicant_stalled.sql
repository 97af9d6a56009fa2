{#- Applications that stopped moving: started, then two weeks without a sign of the applicant. -#}
{{ config(meta={'segment': {
    'name': 'Applicant stalled',
    'description': 'Applicants (application started or submitted) with no engagement in the 14 days before as-of.',
    'kind': 'batch',
    'owner': 'admissions',
    'destinations': ['salesforce', 'email'],
}}) }}

with

applicants as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage = 'applicant'

),

engagement as (

    select profile_id, last_engaged_at from {{ ref('engagement_scores') }}

),

final as (

    select a.profile_id
    from applicants as a
    inner join engagement as e
        on e.profile_id = a.profile_id
    where e.last_engaged_at is null
        or e.last_engaged_at <= {{ cdp.as_of(days_before=14) }}

)

select * from final
