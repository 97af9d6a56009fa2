{#-
    gold.profiles takes email_consent and whatsapp_consent from gold.consent_current, and
    consent_current has all five channels of every profile. Both are incremental with their own notion
    of which profiles changed: a profile whose consent the two disagree on, or that lacks channels,
    fails the build (and names the profile and what differs).
-#}
{{ config(meta={"dagster": {"ref": {"name": "consent_current"}}}) }}

with

profiles as (

    select profile_id, email_consent, whatsapp_consent from {{ ref('profiles') }}

),

consent as (

    select
        profile_id,
        count(*) as channels,
        max(case when channel = 'email' then status end) as email_status,
        max(case when channel = 'whatsapp' then status end) as whatsapp_status
    from {{ ref('consent_current') }}
    group by profile_id

)

select
    p.profile_id,
    p.email_consent,
    c.email_status,
    p.whatsapp_consent,
    c.whatsapp_status,
    c.channels
from profiles as p
left join consent as c
    on c.profile_id = p.profile_id
where c.profile_id is null
    or c.channels <> 5
    or p.email_consent is distinct from c.email_status
    or p.whatsapp_consent is distinct from c.whatsapp_status
