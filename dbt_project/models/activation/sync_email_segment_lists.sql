{#-
    The payload of the sync email_segment_lists (reverse_etl/syncs.yml, mirror mode): one row per member of each
    segment that names email among its destinations (gold.segment_definitions), i.e. one SendGrid list
    membership. A row that leaves this model (the profile left the segment, withdrew consent, bounced) is removed
    from the list by the sync.
    - Consent before contact: the profile's current email consent must allow contact (gold.consent_current) and
      its address must not be on gold.suppression_list (opt-outs and hard bounces).
    - membership_id (profile id and segment) is the sync's key.
    - email_consent (the consent status: opted_in or implied here) is carried so that the email destination
      re-checks it before adding a contact to a list.
-#}

with

email_segments as (

    select segment from {{ ref('segment_definitions') }}
    where ',' || destinations || ',' like '%,email,%'

),

members as (

    select m.profile_id, m.segment
    from {{ ref('segment_memberships') }} as m
    inner join email_segments as s
        on s.segment = m.segment
    where m.exited_at is null

),

profiles as (

    select profile_id, email, first_name, last_name
    from {{ ref('profiles') }}
    where email is not null

),

email_allowed as (

    select profile_id, status as email_consent
    from {{ ref('consent_current') }}
    where channel = 'email'
        and can_contact

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
        m.profile_id || ':' || m.segment as membership_id,
        m.profile_id,

        -- the list and the contact
        m.segment,
        p.email,
        p.first_name,
        p.last_name,

        -- what the destination checks before adding the contact
        c.email_consent
    from members as m
    inner join profiles as p
        on p.profile_id = m.profile_id
    inner join email_allowed as c
        on c.profile_id = m.profile_id
    where not exists (
        select 1 from suppressed_emails as s
        where s.identifier_hash = {{ cdp.md5_hex('p.email') }}
    )

)

select * from final
