{#-
    Students likely to drop out: app activity falling off and unhappy WhatsApp messages.
    churn_risk_score (0..1) = 0.5 * the share of the previous 14 days' app activity lost in the last 14
    + 0.5 * how negative their WhatsApp messages of the last 30 days are (minus the average sentiment,
    0 when neutral or positive). Members score at least var cdp__churn_risk_threshold (0.6): an app
    that went silent alone (0.5) is not enough, with a mildly negative message (-0.2) it is.
-#}
{{ config(meta={'segment': {
    'name': 'Churn risk',
    'description': 'Enrolled and active students whose app activity declines and whose WhatsApp messages are negative; score = churn risk 0..1, members from var cdp__churn_risk_threshold.',
    'kind': 'scored',
    'owner': 'student-success',
    'destinations': ['salesforce', 'twilio'],
}}) }}

with

students as (

    select profile_id from {{ ref('profiles') }}
    where lifecycle_stage in ('enrolled', 'active_student')

),

engagement as (

    select profile_id, app_activity_decline from {{ ref('engagement_scores') }}

),

sentiment as (

    select
        profile_id,
        avg(sentiment_score) as avg_sentiment_30d
    from {{ ref('whatsapp_message_insights') }}
    where received_at > {{ cdp.as_of(days_before=30) }}
        and received_at <= {{ cdp.as_of() }}
        and sentiment_score is not null
    group by profile_id

),

scored as (

    select
        s.profile_id,
        0.5 * e.app_activity_decline
            + 0.5 * greatest(0.0, -coalesce(w.avg_sentiment_30d, 0.0)) as churn_risk_score
    from students as s
    inner join engagement as e
        on e.profile_id = s.profile_id
    left join sentiment as w
        on w.profile_id = s.profile_id

),

final as (

    select
        profile_id,
        round(churn_risk_score, 3) as score
    from scored
    where churn_risk_score >= {{ var('cdp__churn_risk_threshold') }}

)

select * from final
