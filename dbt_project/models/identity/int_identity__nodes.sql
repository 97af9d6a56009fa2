{#-
    The identity graph's nodes: one row per identifier, with the merge-protection verdicts.
    - blocklisted (seed identity_blocklist): placeholder and system values (test@, noreply@, reserved
      domains, 0000000 phones). They join no profile and link nothing.
    - shared: an identifier linked to more distinct identifiers of one type than one person may have
      (var cdp__identity_max_per_profile), e.g. a family tablet on which four students log in with
      their own accounts. All its links are cut (int_identity__cut_edges says which and why) and it
      stays a profile of its own, so the students are not fused into one person.
    Rebuilt every run: verdicts depend on all edges, and counting degrees is one pass over them.
-#}
{{ config(materialized='table') }}
-- depends_on: {{ ref('identity_blocklist') }}

{%- set limits = cdp.identity_max_per_profile() %}
{%- set blocklist = [] %}
{%- if execute %}
    {%- for row in run_query('select identifier_type, pattern, reason from ' ~ ref('identity_blocklist')
        ~ ' order by identifier_type, pattern') %}
        {%- do blocklist.append([row[0], row[1], row[2]]) %}
    {%- endfor %}
{%- endif %}

with

identifiers as (

    select
        identifier_key,
        identifier_type,
        identifier_value,
        min(first_landed_at) as first_landed_at
    from {{ ref('int_identity__identifier_sources') }}
    group by identifier_key, identifier_type, identifier_value

),

blocked as (

    -- the seed's patterns are inlined as constants: a regex taken from a column would be compiled
    -- again for every row (minutes at millions of identifiers instead of a second)
    select identifier_key, blocked_reason
    from (
        select
            identifier_key,
            {%- if blocklist | length > 0 %}
            case
                {%- for rule in blocklist %}
                when identifier_type = '{{ rule[0] }}' and {{ cdp.regex_full_match('identifier_value', rule[1] | replace("'", "''")) }}
                    then '{{ rule[2] | replace("'", "''") }}'
                {%- endfor %}
            end as blocked_reason
            {%- else %}
            cast(null as {{ dbt.type_string() }}) as blocked_reason
            {%- endif %}
        from identifiers
    ) as checked
    where blocked_reason is not null

),

live_edges as (

    select e.identifier_key_a, e.identifier_key_b, e.identifier_type_a, e.identifier_type_b
    from {{ ref('int_identity__edges') }} as e
    where not exists (select 1 from blocked as b where b.identifier_key = e.identifier_key_a)
        and not exists (select 1 from blocked as b where b.identifier_key = e.identifier_key_b)

),

neighbours as (

    select identifier_key_a as identifier_key, identifier_key_b as neighbour_key, identifier_type_b as neighbour_type
    from live_edges
    union all
    select identifier_key_b as identifier_key, identifier_key_a as neighbour_key, identifier_type_a as neighbour_type
    from live_edges

),

degrees as (

    select
        identifier_key,
        neighbour_type,
        count(distinct neighbour_key) as neighbour_count
    from neighbours
    group by identifier_key, neighbour_type

),

over_limit as (

    select
        identifier_key,
        neighbour_type,
        neighbour_count,
        {{ cdp.identity_case('neighbour_type', limits) }} as max_per_profile
    from degrees
    where neighbour_count > {{ cdp.identity_case('neighbour_type', limits) }}

),

shared as (

    select
        identifier_key,
        min(
            'linked to ' || cast(neighbour_count as {{ dbt.type_string() }}) || ' ' || neighbour_type
            || ' identifiers (at most ' || cast(max_per_profile as {{ dbt.type_string() }}) || ' per profile)'
        ) as shared_reason
    from over_limit
    group by identifier_key

),

final as (

    select
        i.identifier_key,
        i.identifier_type,
        i.identifier_value,
        {{ cdp.identity_birth_profile_id('i.identifier_key') }} as birth_profile_id,
        i.first_landed_at,
        b.identifier_key is not null as is_blocked,
        b.blocked_reason,
        s.identifier_key is not null as is_shared,
        s.shared_reason
    from identifiers as i
    left join blocked as b
        on b.identifier_key = i.identifier_key
    left join shared as s
        on s.identifier_key = i.identifier_key

)

select * from final
