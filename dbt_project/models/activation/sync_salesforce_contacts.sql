{#-
    The payload of the sync salesforce_contacts (reverse_etl/syncs.yml): one row per known profile (not
    anonymous) as a Salesforce Contact, upserted by CDP_Profile_Id__c.
    - Consent is pushed as fields, not used as a filter: the CRM record is not a contact attempt, and admissions
      must see who opted out. HasOptedOutOfEmail is true when the profile's email consent does not allow contact
      (gold.consent_current) or its address is on gold.suppression_list (an opt-out or a hard bounce).
    - LastName is required by Salesforce: a profile without one gets '[not provided]' (Salesforce's own
      placeholder for web-to-lead), so that it is still on the CRM.
    - segments: the segments the profile is in now that name salesforce among their destinations, ';'-separated
      (a multi-select picklist's format), sorted so the text does not change when nothing changed.
-#}

with

profiles as (

    select * from {{ ref('profiles') }}
    where lifecycle_stage <> 'anonymous'

),

scores as (

    select profile_id, engagement_score from {{ ref('engagement_scores') }}

),

crm_segments as (

    select segment from {{ ref('segment_definitions') }}
    where ',' || destinations || ',' like '%,salesforce,%'

),

current_segments as (

    select
        m.profile_id,
        {{ dbt.listagg('m.segment', "';'", 'order by m.segment') }} as segments
    from {{ ref('segment_memberships') }} as m
    inner join crm_segments as s
        on s.segment = m.segment
    where m.exited_at is null
    group by m.profile_id

),

consent as (

    select
        profile_id,
        max(case when channel = 'email' then status end) as email_consent,
        max(case when channel = 'email' and can_contact then 1 else 0 end) as email_can_contact,
        max(case when channel = 'whatsapp' then status end) as whatsapp_consent
    from {{ ref('consent_current') }}
    where channel in ('email', 'whatsapp')
    group by profile_id

),

suppressed_emails as (

    select distinct identifier_hash
    from {{ ref('suppression_list') }}
    where channel = 'email'
        and identifier_type = 'email'

),

final as (

    select
        -- ids
        p.profile_id,

        -- contact
        p.first_name,
        coalesce(p.last_name, '[not provided]') as last_name,
        p.email,
        p.phone,

        -- the CDP's view
        p.lifecycle_stage,
        coalesce(e.engagement_score, 0) as engagement_score,
        g.segments,
        p.last_seen_at,

        -- consent
        coalesce(c.email_can_contact, 0) = 0 or x.identifier_hash is not null as has_opted_out_of_email,
        coalesce(c.email_consent, 'unknown') as email_consent,
        coalesce(c.whatsapp_consent, 'unknown') as whatsapp_consent
    from profiles as p
    left join scores as e
        on e.profile_id = p.profile_id
    left join current_segments as g
        on g.profile_id = p.profile_id
    left join consent as c
        on c.profile_id = p.profile_id
    left join suppressed_emails as x
        on x.identifier_hash = {{ cdp.md5_hex('p.email') }}

)

select * from final
