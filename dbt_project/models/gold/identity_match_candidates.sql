{#-
    Probabilistic identity matching: pairs of CRM contacts in different profiles (components of
    deterministic stitching) that are probably one person, with a decision for each. This model never
    merges anything; stitching consumes the rows whose decision is auto_merged or approved.

    1. The pairs, blocked and scored, come from identity.int_identity__match_pairs (incremental: it
       re-pairs only the contacts whose latest version changed; its SQL explains blocking, weights and
       threshold). They do not depend on the profiles; here they are put on the CURRENT profiles
       (left/right_profile_id: the components of 'crm_id:<contact>'), and a pair whose two contacts
       are in one profile now is dropped. Cheap: about 2 pairs per 100 contacts, each looked up in the
       components (0.3 s for 12k pairs of 612k contacts), so a run that only merges profiles stays fast.
    2. Kept: the pairs scoring at least var cdp__match_threshold (0.85), and every pair a reviewer
       decided whatever its score (blocking_key 'reviewer_decision' when no block finds it).
    3. Decision: a reviewer's decision (seed identity_review_decisions, either order of the pair) wins;
       else 'rejected' when the merge would break merge protection (a shared identifier in either
       profile, or more distinct identifiers of a type than var cdp__identity_max_per_profile allows),
       computed for the profiles of the kept pairs only; else 'auto_merged' with var
       cdp__identity_auto_merge, otherwise 'review'.
-#}
{{ config(schema='gold', materialized='table') }}

{%- set threshold = var('cdp__match_threshold', 0.85) -%}
{%- set auto_merge = var('cdp__identity_auto_merge', false) | string | lower == 'true' -%}
{%- set limits = cdp.identity_max_per_profile() -%}
{%- set double = cdp.type_double() -%}

with

pairs as (

    select * from {{ ref('int_identity__match_pairs') }}

),

components as (

    select
        identifier_key,
        identifier_type,
        identifier_value,
        component_id,
        is_shared
    from {{ ref('int_identity__components') }}
    where component_id is not null

),

{# The latest decision per pair, whichever way round the reviewer wrote it. #}
reviewer_decisions as (

    select
        least(left_record_id, right_record_id) as left_record_id,
        greatest(left_record_id, right_record_id) as right_record_id,
        lower(trim(decision)) as decision,
        reviewer,
        decided_at,
        note,
        row_number() over (
            partition by least(left_record_id, right_record_id), greatest(left_record_id, right_record_id)
            order by decided_at desc
        ) as decision_rank
    from {{ ref('identity_review_decisions') }}

),

latest_reviewer_decisions as (

    select * from reviewer_decisions
    where decision_rank = 1

),

{# The pairs on the current profiles: contacts in two different profiles. #}
matched as (

    select
        pairs.left_record_id,
        pairs.right_record_id,
        l.component_id as left_profile_id,
        r.component_id as right_profile_id,
        pairs.blocking_key,
        pairs.name_similarity,
        pairs.birth_date_similarity,
        pairs.location_similarity,
        pairs.score
    from pairs
    inner join components as l
        on l.identifier_key = 'crm_id:' || pairs.left_record_id
    inner join components as r
        on r.identifier_key = 'crm_id:' || pairs.right_record_id
    left join latest_reviewer_decisions as rd
        on rd.left_record_id = pairs.left_record_id
        and rd.right_record_id = pairs.right_record_id
    where l.component_id != r.component_id
        and (pairs.score >= {{ threshold }} or rd.decision is not null)

),

{# Merge protection, on the union of the two profiles' identifiers. #}
matched_profile_pairs as (

    select distinct left_profile_id, right_profile_id
    from matched

),

merged_identifiers as (

    select pp.left_profile_id, pp.right_profile_id, c.identifier_key, c.identifier_type, c.identifier_value, c.is_shared
    from matched_profile_pairs as pp
    inner join components as c
        on c.component_id = pp.left_profile_id

    union all

    select pp.left_profile_id, pp.right_profile_id, c.identifier_key, c.identifier_type, c.identifier_value, c.is_shared
    from matched_profile_pairs as pp
    inner join components as c
        on c.component_id = pp.right_profile_id

),

identifier_counts as (

    select
        left_profile_id,
        right_profile_id,
        identifier_type,
        count(distinct identifier_value) as identifier_count,
        {{ cdp.identity_case('identifier_type', limits) }} as identifier_limit,
        min(case when is_shared then identifier_key end) as shared_identifier_key
    from merged_identifiers
    group by left_profile_id, right_profile_id, identifier_type

),

merge_protection as (

    select
        left_profile_id,
        right_profile_id,
        min(shared_identifier_key) as shared_identifier_key,
        string_agg(
            case
                when identifier_count > identifier_limit
                    then cast(identifier_count as string) || ' ' || identifier_type
                        || ' identifiers (at most ' || cast(identifier_limit as string) || ')'
            end,
            ', ' order by identifier_type
        ) as over_limit
    from identifier_counts
    group by left_profile_id, right_profile_id

),

decided as (

    select
        matched.*,
        case
            when rd.decision is not null then rd.decision
            when mp.shared_identifier_key is not null or mp.over_limit is not null then 'rejected'
            {% if auto_merge -%}
            else 'auto_merged'
            {%- else -%}
            else 'review'
            {%- endif %}
        end as decision,
        case
            when rd.decision is not null
                then rd.decision || ' by reviewer ' || coalesce(rd.reviewer, 'unknown')
                    || coalesce(' on ' || cast(cast(rd.decided_at as date) as string), '')
                    || coalesce(': ' || rd.note, '')
                    || case
                        when rd.decision = 'approved' and (mp.shared_identifier_key is not null or mp.over_limit is not null)
                            then ' (overrides merge protection)'
                        else ''
                    end
            when mp.shared_identifier_key is not null
                then 'merge protection: a profile holds the shared identifier ' || mp.shared_identifier_key
            when mp.over_limit is not null
                then 'merge protection: the merged profile would hold ' || mp.over_limit
            {% if auto_merge -%}
            else 'score at least {{ threshold }} and cdp__identity_auto_merge is on'
            {%- else -%}
            else 'score at least {{ threshold }}; waiting for a reviewer (cdp__identity_auto_merge is off)'
            {%- endif %}
        end as decision_reason
    from matched
    left join merge_protection as mp
        on mp.left_profile_id = matched.left_profile_id
        and mp.right_profile_id = matched.right_profile_id
    left join latest_reviewer_decisions as rd
        on rd.left_record_id = matched.left_record_id
        and rd.right_record_id = matched.right_record_id

),

final as (

    select
        {{ cdp.md5_hex("'salesforce:' || left_record_id || '|salesforce:' || right_record_id") }} as candidate_id,
        left_profile_id,
        right_profile_id,
        'salesforce' as left_source,
        'salesforce' as right_source,
        left_record_id,
        right_record_id,
        blocking_key,
        cast(name_similarity as {{ double }}) as name_similarity,
        cast(birth_date_similarity as {{ double }}) as birth_date_similarity,
        cast(location_similarity as {{ double }}) as location_similarity,
        cast(score as {{ double }}) as score,
        decision,
        decision_reason
    from decided

)

select * from final
