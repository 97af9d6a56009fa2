{#- Fresh inquiries nobody has written to yet: the welcome sequence and the advisor's first call. -#}
{{ config(meta={'segment': {
    'name': 'New inquiry, not contacted',
    'description': 'Known and inquiry profiles whose first web form was submitted in the 7 days before as-of, who have not been delivered any email yet and whom we may email.',
    'kind': 'realtime',
    'owner': 'admissions',
    'destinations': ['salesforce', 'email'],
}}) }}

with

prospects as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage in ('known', 'inquiry')

),

engagement as (

    select profile_id, first_form_submit_at, emails_delivered from {{ ref('engagement_scores') }}

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
    where e.first_form_submit_at > {{ cdp.as_of(days_before=7) }}
        and e.emails_delivered = 0

)

select * from final
