{#-
    Probabilistic identity matching: pairs of CRM contacts in different profiles (components of
    deterministic stitching) that are probably one person, with a decision for each. This model never
    merges anything; stitching consumes the rows whose decision is auto_merged or approved.

    1. Blocking: only contacts that share a block key are compared. The blocks, in priority order
       (blocking_key names the first that found the pair):
         birth_date+postal_code          the same person entered twice, whatever the name typos
         last_name_phonetic+postal_code  a typo in the birth date
         birth_date+first_name_phonetic  a typo in the postal code
       A block key with more than var('cdp__match_max_block_size', 50) contacts is skipped: such a key
       is a placeholder (1900-01-01, 00000) or a common name in a big postcode; its pairs would grow
       with the square of its size (1,225 pairs at 50, 125,000 at 500) and the other blocks still
       find a real pair in it. With 612k generated contacts the largest block has 34 members, and the
       blocks give 506k pairs (0.8 per contact), of which 236k reach the string comparisons: the
       model runs in about 3 s on 2 cores.
    2. Scoring, each part in [0, 1] and the same number on DuckDB and BigQuery (macros/identity/similarity.sql):
         name_similarity        mean of the first-name and last-name similarities, as written or with
                                first and last name swapped (typed in each other's field), whichever
                                is higher; a name's similarity is its string similarity, at least 0.75
                                when the phonetic keys agree
         birth_date_similarity  1 equal; 0.6 day and month swapped, or one digit different; else 0
         location_similarity    postal code (weight 0.4, equal or not), city (0.2) and street (0.4)
                                (string similarity from 0.8 and 0.85 up, else 0), averaged over the
                                parts both contacts have: a missing street is no evidence either way
         score = 0.45 name + 0.25 birth date + 0.30 location (var cdp__match_weights), unknown parts 0.
       What the weights do at the 0.85 threshold:
         - a second contact with a typo in one name, same birth date and address: at least 0.89
           (0.85 only for a 3-letter name whose typo also changes its phonetic key);
         - same birth date and address, one name equal and the other unrelated (similarity <= 0.33): < 0.85;
         - everything equal but the birth date: 0.75; with day and month swapped: 0.90;
         - same name and birth date in another city: at most 0.82; in the same city on a similar
           street but with another postal code: 0.87 (for review: maybe moved, maybe a typo).
       Tried on 612k contacts made with the generator's population (12,049 true pairs) against other
       weightings: this one keeps all true pairs and no false one, true pairs score from 0.887 and
       different people at most 0.834 (0.40/0.35/0.25 without the phonetic floor: 0.867 and 0.860).
       Pairs that cannot reach the threshold even with names and address equal are dropped before the
       string comparisons (most pairs of the last-name block, whose birth dates differ).
    3. Decision: a reviewer's decision (seed identity_review_decisions, either order of the pair) wins,
       and a pair a reviewer decided stays here whatever its score; else 'rejected' when the merge
       would break merge protection (a shared identifier in either profile, or more distinct
       identifiers of a type than var cdp__identity_max_per_profile allows); else 'auto_merged' with
       var cdp__identity_auto_merge, otherwise 'review'.
-#}
{{ config(schema='gold', materialized='table') }}

{%- set threshold = var('cdp__match_threshold', 0.85) -%}
{%- set max_block_size = var('cdp__match_max_block_size', 50) -%}
{%- set weights = var('cdp__match_weights', {'name': 0.45, 'birth_date': 0.25, 'location': 0.30}) -%}
{%- set auto_merge = var('cdp__identity_auto_merge', false) | string | lower == 'true' -%}
{%- set limits = cdp.identity_max_per_profile() -%}
{%- set double = cdp.type_double() -%}
{%- set blocks = ['birth_date+postal_code', 'last_name_phonetic+postal_code', 'birth_date+first_name_phonetic'] -%}

with

contacts as (

    select
        contact_id,
        birth_date,
        nullif({{ cdp.match_text('first_name') }}, '') as first_name_key,
        nullif({{ cdp.match_text('last_name') }}, '') as last_name_key,
        nullif({{ cdp.match_text('mailing_postal_code', keep_digits=true) }}, '') as postal_code_key,
        nullif({{ cdp.match_text('mailing_city') }}, '') as city_key,
        {#- Straße, Strasse and Str. are one word: 'Kirchstraße 74' -> 'kirchstr74' #}
        nullif(replace({{ cdp.match_text('mailing_street', keep_digits=true) }}, 'strasse', 'str'), '') as street_key
    from {{ ref('stg_salesforce__contacts_latest') }}

),

{# Phonetic keys once per distinct name, not per contact (a few thousand names for 600k contacts). #}
names as (

    select first_name_key as name_key from contacts
    union distinct
    select last_name_key as name_key from contacts

),

name_phonetics as (

    select
        name_key,
        {{ cdp.phonetic_key('name_key', normalized=true) }} as phonetic_key
    from names
    where name_key is not null

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

records as (

    select
        contacts.*,
        first_name_phonetics.phonetic_key as first_name_phonetic,
        last_name_phonetics.phonetic_key as last_name_phonetic,
        components.component_id
    from contacts
    inner join components
        on components.identifier_key = 'crm_id:' || contacts.contact_id
    left join name_phonetics as first_name_phonetics
        on first_name_phonetics.name_key = contacts.first_name_key
    left join name_phonetics as last_name_phonetics
        on last_name_phonetics.name_key = contacts.last_name_key

),

block_members as (

    select contact_id, component_id, 1 as block_rank, cast(birth_date as string) || '|' || postal_code_key as block_value
    from records
    where birth_date is not null and postal_code_key is not null

    union all

    select contact_id, component_id, 2 as block_rank, last_name_phonetic || '|' || postal_code_key as block_value
    from records
    where last_name_phonetic is not null and postal_code_key is not null

    union all

    select contact_id, component_id, 3 as block_rank, cast(birth_date as string) || '|' || first_name_phonetic as block_value
    from records
    where birth_date is not null and first_name_phonetic is not null

),

usable_blocks as (

    select block_rank, block_value
    from block_members
    group by block_rank, block_value
    having count(*) between 2 and {{ max_block_size }}

),

block_pairs as (

    select
        left_member.contact_id as left_record_id,
        right_member.contact_id as right_record_id,
        left_member.block_rank
    from block_members as left_member
    inner join usable_blocks
        on usable_blocks.block_rank = left_member.block_rank
        and usable_blocks.block_value = left_member.block_value
    inner join block_members as right_member
        on right_member.block_rank = left_member.block_rank
        and right_member.block_value = left_member.block_value
        and right_member.contact_id > left_member.contact_id
        and right_member.component_id != left_member.component_id

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

{# A pair a reviewer decided stays a candidate whatever its blocks and score, so that the decision
   keeps its effect when the data or the threshold change. #}
reviewed_pairs as (

    select
        rd.left_record_id,
        rd.right_record_id,
        99 as block_rank
    from latest_reviewer_decisions as rd
    inner join records as l
        on l.contact_id = rd.left_record_id
    inner join records as r
        on r.contact_id = rd.right_record_id
    where l.component_id != r.component_id

),

pairs as (

    select
        found.left_record_id,
        found.right_record_id,
        min(found.block_rank) as block_rank,
        max(case when rd.decision is not null then 1 else 0 end) as is_reviewed
    from (
        select * from block_pairs
        union all
        select * from reviewed_pairs
    ) as found
    left join latest_reviewer_decisions as rd
        on rd.left_record_id = found.left_record_id
        and rd.right_record_id = found.right_record_id
    group by found.left_record_id, found.right_record_id

),

with_birth_dates as (

    select
        pairs.*,
        l.component_id as left_profile_id,
        r.component_id as right_profile_id,
        {#- 'yyyy-mm-dd' on both warehouses: one different digit is a similarity of 0.9 #}
        case
            when l.birth_date is null or r.birth_date is null then null
            when l.birth_date = r.birth_date then 1
            when extract(year from l.birth_date) = extract(year from r.birth_date)
                and extract(month from l.birth_date) = extract(day from r.birth_date)
                and extract(day from l.birth_date) = extract(month from r.birth_date)
                then 0.6
            when {{ cdp.string_similarity('cast(l.birth_date as string)', 'cast(r.birth_date as string)') }} >= 0.85
                then 0.6
            else 0
        end as birth_date_similarity
    from pairs
    inner join records as l
        on l.contact_id = pairs.left_record_id
    inner join records as r
        on r.contact_id = pairs.right_record_id

),

{# The pairs that can still reach the threshold with names and address equal (and all reviewed pairs). #}
reachable as (

    select * from with_birth_dates
    where {{ weights['name'] }} + {{ weights['birth_date'] }} * coalesce(birth_date_similarity, 0) + {{ weights['location'] }} >= {{ threshold }}
        or is_reviewed = 1

),

compared as (

    select
        reachable.*,

        -- names: string similarity, at least 0.75 when the phonetic keys agree ('Tim' and 'Tmi' are
        -- only 0.33 similar letter by letter, and a swap of two letters is the commonest typo)
        {%- for left, right in [('first', 'first'), ('last', 'last'), ('first', 'last'), ('last', 'first')] %}
        greatest(
            coalesce({{ cdp.string_similarity('l.' ~ left ~ '_name_key', 'r.' ~ right ~ '_name_key') }}, 0),
            case when l.{{ left }}_name_phonetic = r.{{ right }}_name_phonetic then 0.75 else 0 end
        ) as {{ left }}_{{ right }}_similarity,
        {%- endfor %}

        -- location, null where either contact lacks the part. Postal codes count only when equal: one
        -- digit apart is usually the next district, and a typo in it is still found (block 3) when city
        -- and street agree. City and street count from one typo on (0.8, 0.85); below that a partial
        -- similarity ('Friedrichstr 63' vs 'Friedrichstr 124a') means a different address.
        case when l.postal_code_key = r.postal_code_key then 1 when l.postal_code_key != r.postal_code_key then 0 end as postal_code_similarity,
        {{ cdp.string_similarity('l.city_key', 'r.city_key') }} as city_similarity,
        {{ cdp.string_similarity('l.street_key', 'r.street_key') }} as street_similarity
    from reachable
    inner join records as l
        on l.contact_id = reachable.left_record_id
    inner join records as r
        on r.contact_id = reachable.right_record_id

),

similarities as (

    select
        left_record_id,
        right_record_id,
        left_profile_id,
        right_profile_id,
        case block_rank
            {%- for block in blocks %}
            when {{ loop.index }} then '{{ block }}'
            {%- endfor %}
            else 'reviewer_decision'
        end as blocking_key,
        is_reviewed,
        greatest(
            (first_first_similarity + last_last_similarity) / 2,
            (first_last_similarity + last_first_similarity) / 2
        ) as name_similarity,
        birth_date_similarity,
        -- rounded: (0.4 + 0.2) / 0.6 is not exactly 1 in floating point
        round((
            coalesce(0.4 * postal_code_similarity, 0)
            + coalesce(0.2 * case when city_similarity >= 0.8 then city_similarity else 0 end, 0)
            + coalesce(0.4 * case when street_similarity >= 0.85 then street_similarity else 0 end, 0)
        ) / nullif(
            case when postal_code_similarity is null then 0 else 0.4 end
            + case when city_similarity is null then 0 else 0.2 end
            + case when street_similarity is null then 0 else 0.4 end,
            0
        ), 6) as location_similarity
    from compared

),

scored as (

    select
        *,
        {{ weights['name'] }} * name_similarity
            + {{ weights['birth_date'] }} * coalesce(birth_date_similarity, 0)
            + {{ weights['location'] }} * coalesce(location_similarity, 0) as score
    from similarities

),

matched as (

    select * from scored
    where score >= {{ threshold }}
        or is_reviewed = 1

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
