{#-
    The payload of the sync whatsapp_advisor_intro (reverse_etl/syncs.yml, insert mode): one WhatsApp message per
    entry of a profile into the segment high_intent_mba_prospect, while the stay lasts.
    - message_key is the entry (gold.segment_memberships.membership_id): the runner sends each key once, so a
      profile gets one intro per entry, and another only if it leaves and enters again.
    - Consent before contact: the profile's current WhatsApp consent must allow contact (gold.consent_current:
      opted in, or a conversation the person started) and its number must not be on gold.suppression_list.
    - body is the template's text (what the emulator and the audit show); content_variables fill the approved
      template's placeholders ({{1}} first name, {{2}} programme).
    - whatsapp_consent (the consent status: opted_in or implied here) is carried so that the Twilio destination
      re-checks it before sending; country places the profile for quiet hours in its local time.
-#}

{%- set segment = 'high_intent_mba_prospect' %}

with

entries as (

    select membership_id, profile_id, entered_at
    from {{ ref('segment_memberships') }}
    where segment = '{{ segment }}'
        and exited_at is null

),

profiles as (

    select profile_id, first_name, phone, program_interest, country
    from {{ ref('profiles') }}
    where phone is not null

),

whatsapp_allowed as (

    select profile_id, status as whatsapp_consent
    from {{ ref('consent_current') }}
    where channel = 'whatsapp'
        and can_contact

),

suppressed_phones as (

    select distinct identifier_hash
    from {{ ref('suppression_list') }}
    where channel = 'whatsapp'
        and identifier_type = 'phone'

),

eligible as (

    select
        e.membership_id,
        e.profile_id,
        e.entered_at,
        p.phone,
        p.country,
        w.whatsapp_consent,
        coalesce(p.first_name, 'there') as greeting_name,
        coalesce(p.program_interest, 'MBA') as programme
    from entries as e
    inner join profiles as p
        on p.profile_id = e.profile_id
    inner join whatsapp_allowed as w
        on w.profile_id = e.profile_id
    where not exists (
        select 1 from suppressed_phones as s
        where s.identifier_hash = {{ cdp.md5_hex('p.phone') }}
    )

),

final as (

    select
        -- ids
        membership_id as message_key,
        profile_id,

        -- the message
        phone,
        'Hi ' || greeting_name || ', I am your admissions advisor at Northbridge University. I saw you are looking '
            || 'at the ' || programme || ' programme: would you like a short call this week?' as body,
        cast({{ cdp.json_build_object(['1', 'greeting_name', '2', 'programme']) }} as {{ dbt.type_string() }})
            as content_variables,

        -- what the destination checks before sending
        whatsapp_consent,
        country,

        -- timestamps
        entered_at
    from eligible

)

select * from final
