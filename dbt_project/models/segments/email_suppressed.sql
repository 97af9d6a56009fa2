{#- Addresses we must not mail: bounced, unsubscribed, reported as spam, or opted out in the CRM. -#}
{{ config(meta={'segment': {
    'name': 'Email suppressed',
    'description': 'Profiles whose email bounced (hard bounce or dropped), who unsubscribed or reported spam, or whose email consent is opted out.',
    'kind': 'batch',
    'owner': 'marketing-operations',
    'destinations': ['salesforce'],
}}) }}
{#- Not an email list: a list of people we must not mail is no audience (SendGrid keeps its own suppressions, and
    the email sync drops these profiles by consent and gold.suppression_list); Salesforce shows it on the record. -#}

with

deliverability as (

    select profile_id from {{ ref('engagement_scores') }}
    where email_bounces > 0
        or email_unsubscribes > 0
        or email_spam_reports > 0

),

opted_out as (

    select profile_id from {{ ref('consent_current') }}
    where channel = 'email' and status = 'opted_out'

),

final as (

    select profile_id from deliverability
    union distinct
    select profile_id from opted_out

)

select * from final
