{#-
    Merge protection cuts the links of any identifier linked to too many identifiers of one type. A
    profile can still exceed a limit through a chain (two emails each linked to one different
    user_id, joined by a CRM contact): this test lists such profiles so that a reviewer sees them. It
    warns rather than fails: the profile is probably one person with two app accounts, not two people.
-#}
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'profiles'}}}) }}

{%- set limits = cdp.identity_max_per_profile() %}

with

per_type as (

    select
        profile_id,
        identifier_type,
        count(distinct identifier_value) as identifiers
    from {{ ref('profile_identifiers') }}
    group by profile_id, identifier_type

)

select *
from per_type
where identifiers > {{ cdp.identity_case('identifier_type', limits) }}
