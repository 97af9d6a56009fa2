{#- People in an active WhatsApp conversation who opted in: the advisor may write to them there. -#}
{{ config(meta={'segment': {
    'name': 'WhatsApp engaged',
    'description': 'At least one inbound WhatsApp message in the 30 days before as-of, and WhatsApp consent allows contact.',
    'kind': 'realtime',
    'owner': 'admissions',
    'destinations': ['twilio', 'salesforce'],
}}) }}

with

engagement as (

    select profile_id from {{ ref('engagement_scores') }}
    where whatsapp_messages_30d > 0

),

whatsapp_allowed as (

    select profile_id from {{ ref('consent_current') }}
    where channel = 'whatsapp' and can_contact

),

final as (

    select e.profile_id
    from engagement as e
    inner join whatsapp_allowed as c
        on c.profile_id = e.profile_id

)

select * from final
