{#-
    Probabilistic identity matching, the expensive half: pairs of CRM contacts that are probably one
    person, scored. gold.identity_match_candidates puts them on the current profiles and decides.
    The pairs depend only on the contacts' latest values (stg_salesforce__contacts_latest) and on which
    pairs reviewers decided (seed identity_review_decisions), never on the profiles, so a merge of
    profiles (most micro-batches) changes nothing here.

    1. Blocking: only contacts that share a block key are compared. The blocks, in priority order
       (blocking_key names the first that found the pair):
         birth_date+postal_code          the same person entered twice, whatever the name typos
         last_name_phonetic+postal_code  a typo in the birth date
         birth_date+first_name_phonetic  a typo in the postal code
       A block key with more than var('cdp__match_max_block_size', 50) contacts is skipped: such a key
       is a placeholder (1900-01-01, 00000) or a common name in a big postcode; its pairs would grow
       with the square of its size (1,225 pairs at 50, 125,000 at 500) and the other blocks still
       find a real pair in it. With 612k generated contacts the largest block has 34 members, and the
       blocks give 506k pairs (0.8 per contact), of which 236k reach the string comparisons.
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
    3. Kept: every pair blocking finds that scores at least var cdp__match_threshold (0.85), and every
       pair of the review seed (either order; blocking_key 'reviewer_decision' when no block finds
       it) whatever its score, so that a decision keeps its effect when data or threshold change.
       Pairs of contacts in one profile are kept too: the gold model drops them.

    Incremental (delete+insert on pair_key). A pair's row depends only on its two contacts' latest
    values, on the sizes of the blocks they share and on the review seed, so a run re-pairs only:
      - the contacts with a version loaded since the last run (stg_salesforce__contacts.bronze_loaded_at
        after the largest contacts_loaded_through; a contact's versions are never removed);
      - both contacts of a pair added to or removed from the review seed;
      - every member of a block whose usability (2 to max_block_size members) may have changed: a
        block a contact with a new version is in now or was in before (any of its versions), when
        its size at the last run, between u (its unchanged members) and u + k (k the new-version
        contacts touching it), may be on the other side of the cap than its size now. Only the cap
        matters: a pair of two unchanged members was and stays in a block of at least 2.
    Their old pairs are deleted (pre-step), then their pairs with every contact of a shared block are
    inserted. Every block key holds a birth date or a postal code, so only the contacts sharing one of
    those with a re-paired contact get match keys (a few percent of them; block sizes stay exact).
    A run without a new contact version and without a seed change inserts nothing (three small
    look-ups); a full refresh gives the same rows. Pairs made with other settings (threshold, weights,
    block size cap; column match_settings) are all made again; after a change of the matching macros
    or of silver's contact parsing, run with --full-refresh.
-#}
{{ config(
    materialized='incremental',
    unique_key='pair_key',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    post_hook=[
        "drop table if exists {{ this.incorporate(path={'identifier': this.identifier ~ '__work_seed'}) }}",
        "drop table if exists {{ this.incorporate(path={'identifier': this.identifier ~ '__work_versions'}) }}",
        "drop table if exists {{ this.incorporate(path={'identifier': this.identifier ~ '__work_records'}) }}",
        "drop table if exists {{ this.incorporate(path={'identifier': this.identifier ~ '__work_repair'}) }}",
    ],
) }}

{%- set threshold = var('cdp__match_threshold', 0.85) -%}
{%- set max_block_size = var('cdp__match_max_block_size', 50) -%}
{%- set weights = var('cdp__match_weights', {'name': 0.45, 'birth_date': 0.25, 'location': 0.30}) -%}
{%- set double = cdp.type_double() -%}
{%- set timestamp_type = cdp.type_utc_timestamp() -%}
{%- set blocks = ['birth_date+postal_code', 'last_name_phonetic+postal_code', 'birth_date+first_name_phonetic'] -%}
{#- the settings the stored pairs were made with: a run with others pairs everything again -#}
{%- set match_settings = 'threshold=' ~ threshold ~ ';max_block_size=' ~ max_block_size
    ~ ';weights=' ~ weights['name'] ~ ',' ~ weights['birth_date'] ~ ',' ~ weights['location'] -%}

{%- set contacts_latest = ref('stg_salesforce__contacts_latest') -%}
{%- set contact_versions = ref('stg_salesforce__contacts') -%}
{%- set review_decisions = ref('identity_review_decisions') -%}
{#- work tables of an incremental run (dropped by the post-hooks) -#}
{%- set work = namespace(seed=none, versions=none, records=none, repair=none) -%}


{#- The match keys of contacts: one row per row of __relation__ (contacts_latest, or versions)
    that passes __filter__, an optional where clause on the relation's columns and postal_code_key
    (computed first, so that the other keys are computed for the rows kept only). Filled in with
    replace(): a model cannot define macros. -#}
{%- set match_records_sql -%}
    with

    located as (

        select
            *,
            nullif({{ cdp.match_text('mailing_postal_code', keep_digits=true) }}, '') as postal_code_key
        from __relation__

    ),

    contacts as (

        select
            contact_id,
            birth_date,
            nullif({{ cdp.match_text('first_name') }}, '') as first_name_key,
            nullif({{ cdp.match_text('last_name') }}, '') as last_name_key,
            postal_code_key,
            nullif({{ cdp.match_text('mailing_city') }}, '') as city_key,
            {#- Straße, Strasse and Str. are one word: 'Kirchstraße 74' -> 'kirchstr74' #}
            nullif(replace({{ cdp.match_text('mailing_street', keep_digits=true) }}, 'strasse', 'str'), '') as street_key
        from located
        __filter__

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

    )

    select
        contacts.*,
        first_name_phonetics.phonetic_key as first_name_phonetic,
        last_name_phonetics.phonetic_key as last_name_phonetic
    from contacts
    left join name_phonetics as first_name_phonetics
        on first_name_phonetics.name_key = contacts.first_name_key
    left join name_phonetics as last_name_phonetics
        on last_name_phonetics.name_key = contacts.last_name_key
{%- endset -%}


{#- The blocks each row of __records__ (match keys) is in: (contact_id, block_rank, block_value). -#}
{%- set block_members_sql -%}
    select contact_id, 1 as block_rank, cast(birth_date as string) || '|' || postal_code_key as block_value
    from __records__
    where birth_date is not null and postal_code_key is not null

    union all

    select contact_id, 2 as block_rank, last_name_phonetic || '|' || postal_code_key as block_value
    from __records__
    where last_name_phonetic is not null and postal_code_key is not null

    union all

    select contact_id, 3 as block_rank, cast(birth_date as string) || '|' || first_name_phonetic as block_value
    from __records__
    where birth_date is not null and first_name_phonetic is not null
{%- endset -%}


{#- The pairs of the review seed, in (smaller, greater) order. -#}
{%- set review_pairs_sql -%}
    select distinct
        least(left_record_id, right_record_id) as left_record_id,
        greatest(left_record_id, right_record_id) as right_record_id
    from {{ review_decisions }}
{%- endset -%}


{#- The pairs added to the review seed or removed from it since the last run (the rows of this
    model with is_review_pair); __filter__ an optional where clause on the added pairs. -#}
{%- set review_changes_sql -%}
    with
    seed_pairs as ({{ review_pairs_sql }}),
    stored as (select left_record_id, right_record_id from {{ this }} where is_review_pair),
    added as (
        select s.left_record_id, s.right_record_id
        from seed_pairs as s
        left join stored as t
            on t.left_record_id = s.left_record_id and t.right_record_id = s.right_record_id
        where t.left_record_id is null
    ),
    removed as (
        select t.left_record_id, t.right_record_id
        from stored as t
        left join seed_pairs as s
            on s.left_record_id = t.left_record_id and s.right_record_id = t.right_record_id
        where s.left_record_id is null
    )
    select left_record_id, right_record_id from added
    __filter__
    union all
    select left_record_id, right_record_id from removed
{%- endset -%}


{#- run: 'full' (first run, full refresh, or an empty table), 'none' (nothing to re-pair) or 'changed' -#}
{%- set run = namespace(mode='full', loaded_through=none) -%}

{%- if execute and flags.WHICH in ('run', 'build') and model.resource_type != 'unit_test' and is_incremental() -%}
    {%- set work.seed = this.incorporate(path={'identifier': this.identifier ~ '__work_seed'}) -%}
    {%- set work.versions = this.incorporate(path={'identifier': this.identifier ~ '__work_versions'}) -%}
    {%- set work.records = this.incorporate(path={'identifier': this.identifier ~ '__work_records'}) -%}
    {%- set work.repair = this.incorporate(path={'identifier': this.identifier ~ '__work_repair'}) -%}
    {%- set stored = run_query('select max(contacts_loaded_through), min(match_settings), max(match_settings) from ' ~ this) -%}
    {%- set watermark = stored.columns[0].values()[0] -%}
    {%- if watermark is none or stored.columns[1].values()[0] != match_settings or stored.columns[2].values()[0] != match_settings -%}
        {#- an empty table, or pairs made with other settings: pair everything again -#}
        {%- do run_query('delete from ' ~ this ~ ' where true') -%}
    {%- else -%}
        {%- set watermark_sql = "cast('" ~ watermark ~ "' as " ~ timestamp_type ~ ")" -%}
        {%- set loaded_through = run_query('select max(bronze_loaded_at) from ' ~ contact_versions
            ~ ' where bronze_loaded_at > ' ~ watermark_sql).columns[0].values()[0] -%}

        {#- pairs added to the seed or removed from it since the last run; a seed pair whose contact
            does not exist is never stored, and is no change (only looked up when there is a change) -#}
        {%- set review_changes = review_changes_sql | replace('__filter__', '') -%}
        {%- set review_changes_count = run_query('select count(*) from (' ~ review_changes ~ ') as c').columns[0].values()[0] -%}
        {%- if review_changes_count > 0 -%}
            {%- set review_changes = review_changes_sql | replace('__filter__',
                'where left_record_id in (select contact_id from ' ~ contact_versions ~ ')
                    and right_record_id in (select contact_id from ' ~ contact_versions ~ ')') -%}
            {%- set review_changes_count = run_query('select count(*) from (' ~ review_changes ~ ') as c').columns[0].values()[0] -%}
        {%- endif -%}

        {%- if loaded_through is none and review_changes_count == 0 -%}
            {%- set run.mode = 'none' -%}
        {%- else -%}
            {%- set run.mode = 'changed' -%}
            {%- set run.loaded_through = loaded_through if loaded_through is not none else watermark -%}

            {#- 1. the changed contacts: a version loaded since the last run, or in a changed seed pair -#}
            {%- do run_query('create or replace table ' ~ work.seed ~ ' as
                with review_changes as (' ~ review_changes ~ ')
                select contact_id, max(has_new_version) as has_new_version
                from (
                    select contact_id, 1 as has_new_version from ' ~ contact_versions ~ '
                    where bronze_loaded_at > ' ~ watermark_sql ~ '
                    union all
                    select left_record_id as contact_id, 0 as has_new_version from review_changes
                    union all
                    select right_record_id as contact_id, 0 as has_new_version from review_changes
                ) as changed
                group by contact_id') -%}
            {#- 2. the match keys of every version they have: their values now and at the last run -#}
            {%- do run_query('create or replace table ' ~ work.versions ~ ' as '
                ~ match_records_sql | replace('__relation__', contact_versions | string)
                | replace('__filter__', 'where contact_id in (select contact_id from ' ~ work.seed ~ ')')) -%}
            {#- 3. the match keys of the contacts that can share a block with those values: every block
                key holds a birth date or a postal code (and of the contacts of review seed pairs) -#}
            {%- set candidates_filter = 'where birth_date in (select birth_date from ' ~ work.versions ~ ')
                    or postal_code_key in (select postal_code_key from ' ~ work.versions ~ ')
                    or contact_id in (select left_record_id from ' ~ review_decisions ~ ')
                    or contact_id in (select right_record_id from ' ~ review_decisions ~ ')' -%}
            {%- do run_query('create or replace table ' ~ work.records ~ ' as '
                ~ match_records_sql | replace('__relation__', contacts_latest | string) | replace('__filter__', candidates_filter)) -%}
            {#- 4. the contacts to re-pair: the changed ones, and the members of every block a new
                version entered or left whose usability (2 to max_block_size members) may have changed.
                With u unchanged members now (the block's size minus the changed contacts in it now)
                and the block touched by k changed contacts (in any of their versions), its size at the
                last run was between u and u + k. -#}
            {%- do run_query('create or replace table ' ~ work.repair ~ ' as
                with
                current_members as (' ~ block_members_sql | replace('__records__', work.records | string) ~ '),
                changed_versions as (
                    select * from ' ~ work.versions ~ '
                    where contact_id in (select contact_id from ' ~ work.seed ~ ' where has_new_version = 1)
                ),
                touching as (' ~ block_members_sql | replace('__records__', 'changed_versions') ~ '),
                touched as (
                    select block_rank, block_value, count(distinct contact_id) as touching_contacts
                    from touching
                    group by block_rank, block_value
                ),
                block_sizes as (
                    select
                        t.block_rank,
                        t.block_value,
                        t.touching_contacts,
                        count(m.contact_id) as block_size,
                        count(s.contact_id) as changed_members
                    from touched as t
                    left join current_members as m
                        on m.block_rank = t.block_rank and m.block_value = t.block_value
                    left join ' ~ work.seed ~ ' as s
                        on s.contact_id = m.contact_id and s.has_new_version = 1
                    group by t.block_rank, t.block_value, t.touching_contacts
                ),
                resized as (
                    select block_rank, block_value
                    from block_sizes
                    where (block_size > ' ~ max_block_size ~ ' and block_size - changed_members <= ' ~ max_block_size ~ ')
                        or (block_size <= ' ~ max_block_size ~ ' and block_size - changed_members + touching_contacts > ' ~ max_block_size ~ ')
                )
                select contact_id from ' ~ work.seed ~ '
                union distinct
                select m.contact_id
                from current_members as m
                inner join resized as r
                    on r.block_rank = m.block_rank and r.block_value = m.block_value') -%}
            {#- 5. (rare) a member of such a block can have its other blocks elsewhere: add the contacts
                that can share a block with it -#}
            {%- set uncovered_sql = 'select c.birth_date, c.postal_code_key
                from ' ~ work.repair ~ ' as r
                inner join ' ~ work.records ~ ' as c on c.contact_id = r.contact_id
                where (c.birth_date is not null and c.birth_date not in
                        (select birth_date from ' ~ work.versions ~ ' where birth_date is not null))
                    or (c.postal_code_key is not null and c.postal_code_key not in
                        (select postal_code_key from ' ~ work.versions ~ ' where postal_code_key is not null))' -%}
            {%- if run_query('select count(*) from (' ~ uncovered_sql ~ ') as u').columns[0].values()[0] > 0 -%}
                {%- do run_query('insert into ' ~ work.records ~ ' select * from ('
                    ~ match_records_sql | replace('__relation__', contacts_latest | string) | replace('__filter__',
                        'where contact_id not in (select contact_id from ' ~ work.records ~ ')
                            and (birth_date in (select birth_date from (' ~ uncovered_sql ~ ') as u)
                                or postal_code_key in (select postal_code_key from (' ~ uncovered_sql ~ ') as u))')
                    ~ ') as extra') -%}
            {%- endif -%}
            {#- 6. their old pairs go -#}
            {%- do run_query('delete from ' ~ this ~ '
                where left_record_id in (select contact_id from ' ~ work.repair ~ ')
                    or right_record_id in (select contact_id from ' ~ work.repair ~ ')') -%}
        {%- endif -%}
    {%- endif -%}
{%- endif %}

{% if run.mode == 'none' -%}

-- no contact version loaded and no review seed change since the last run: nothing to re-pair
select * from {{ this }}
where 1 = 0

{%- else -%}

with

{% if run.mode == 'changed' -%}

records as (

    select * from {{ work.records }}

),

{# the contacts to re-pair, their pairs deleted before this insert #}
repair as (

    select contact_id from {{ work.repair }}

),

block_members as (

    {{ block_members_sql | replace('__records__', 'records') }}

),

repair_blocks as (

    select distinct block_rank, block_value
    from block_members
    where contact_id in (select contact_id from repair)

),

usable_blocks as (

    select m.block_rank, m.block_value
    from block_members as m
    inner join repair_blocks as b
        on b.block_rank = m.block_rank
        and b.block_value = m.block_value
    group by m.block_rank, m.block_value
    having count(*) between 2 and {{ max_block_size }}

),

block_pairs as (

    select
        least(member.contact_id, other.contact_id) as left_record_id,
        greatest(member.contact_id, other.contact_id) as right_record_id,
        member.block_rank
    from block_members as member
    inner join usable_blocks
        on usable_blocks.block_rank = member.block_rank
        and usable_blocks.block_value = member.block_value
    inner join block_members as other
        on other.block_rank = member.block_rank
        and other.block_value = member.block_value
        and other.contact_id != member.contact_id
    where member.contact_id in (select contact_id from repair)

),

review_pairs as (

    select left_record_id, right_record_id
    from ({{ review_pairs_sql }}) as seed_pairs
    where left_record_id in (select contact_id from repair)
        or right_record_id in (select contact_id from repair)

),

{%- else %}

records as (

    {{ match_records_sql | replace('__relation__', contacts_latest | string) | replace('__filter__', '') }}

),

block_members as (

    {{ block_members_sql | replace('__records__', 'records') }}

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

),

review_pairs as (

    {{ review_pairs_sql }}

),

{%- endif %}

pairs as (

    select
        left_record_id,
        right_record_id,
        min(block_rank) as block_rank,
        max(is_review_pair) as is_review_pair
    from (
        select left_record_id, right_record_id, block_rank, 0 as is_review_pair from block_pairs
        union all
        select left_record_id, right_record_id, 99 as block_rank, 1 as is_review_pair from review_pairs
    ) as found
    group by left_record_id, right_record_id

),

with_birth_dates as (

    select
        pairs.*,
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
        or is_review_pair = 1

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
        case block_rank
            {%- for block in blocks %}
            when {{ loop.index }} then '{{ block }}'
            {%- endfor %}
            else 'reviewer_decision'
        end as blocking_key,
        is_review_pair,
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

final as (

    select
        left_record_id || '|' || right_record_id as pair_key,
        left_record_id,
        right_record_id,
        blocking_key,
        cast(name_similarity as {{ double }}) as name_similarity,
        cast(birth_date_similarity as {{ double }}) as birth_date_similarity,
        cast(location_similarity as {{ double }}) as location_similarity,
        cast(score as {{ double }}) as score,
        is_review_pair = 1 as is_review_pair,
        '{{ match_settings }}' as match_settings,
        {%- if run.loaded_through is not none %}
        cast('{{ run.loaded_through }}' as {{ timestamp_type }}) as contacts_loaded_through
        {%- else %}
        (select max(bronze_loaded_at) from {{ contact_versions }}) as contacts_loaded_through
        {%- endif %}
    from scored
    where score >= {{ threshold }}
        or is_review_pair = 1

)

select * from final
{%- if run.mode == 'changed' %}

union all

{#- The watermark is the largest contacts_loaded_through. When the re-paired contacts have no pair,
    nothing above carries the new one: one row that this run keeps is written again with it. #}
select
    pair_key, left_record_id, right_record_id, blocking_key, name_similarity, birth_date_similarity,
    location_similarity, score, is_review_pair, match_settings,
    cast('{{ run.loaded_through }}' as {{ timestamp_type }}) as contacts_loaded_through
from {{ this }}
where pair_key = (select min(pair_key) from {{ this }})
{%- endif %}

{%- endif %}
