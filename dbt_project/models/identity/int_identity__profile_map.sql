{#-
    Components merged by probabilistic matching: only the candidate pairs of
    gold.identity_match_candidates whose decision is 'auto_merged' (var cdp__identity_auto_merge) or
    'approved' (a reviewer's decision). Chains of such pairs merge transitively; the merged profile
    takes the id of its oldest component, like deterministic merges. Components not listed here are
    profiles of their own (profile_id = component_id).
-#}
{{ config(materialized='table', post_hook="{{ cdp.drop_components_work(this) }}") }}

{%- set work_nodes = cdp.cc_work(this, 'nodes') -%}
{%- set candidates = ref('identity_match_candidates') -%}
{%- set components = ref('int_identity__components') -%}
{%- set pairs_sql = "select left_profile_id, right_profile_id, score from " ~ candidates
    ~ " where decision in ('auto_merged', 'approved')" -%}

{%- if execute and flags.WHICH in ('run', 'build') -%}
    {%- do run_query('create or replace table ' ~ work_nodes ~ ' as
        with merged as (
            select left_profile_id as component_id from (' ~ pairs_sql ~ ') as p
            union distinct
            select right_profile_id as component_id from (' ~ pairs_sql ~ ') as p
        )
        select
            m.component_id,
            row_number() over (order by c.first_landed_at, c.birth_profile_id) as node
        from merged as m
        inner join ' ~ components ~ ' as c
            on c.birth_profile_id = m.component_id and c.component_id = m.component_id') -%}
{%- endif -%}

{%- set labels = cdp.connected_components(
    edges_sql='select a.node as src, b.node as dst from (' ~ pairs_sql ~ ') as p
        inner join ' ~ work_nodes ~ ' as a on a.component_id = p.left_profile_id
        inner join ' ~ work_nodes ~ ' as b on b.component_id = p.right_profile_id',
    base=this,
) %}

with

merged_components as (

    select * from {{ work_nodes }}

),

labels as (

    select * from {{ labels }}

),

pair_scores as (

    select left_profile_id as component_id, score from ({{ pairs_sql }}) as p
    union all
    select right_profile_id as component_id, score from ({{ pairs_sql }}) as p

),

mapped as (

    select
        n.component_id,
        root.component_id as profile_id
    from merged_components as n
    inner join labels as l
        on l.node = n.node
    inner join merged_components as root
        on root.node = l.label

),

final as (

    -- match_score: the weakest probabilistic link of the merged profile
    select
        m.component_id,
        m.profile_id,
        min(s.score) over (partition by m.profile_id) as match_score
    from mapped as m
    inner join (
        select component_id, min(score) as score from pair_scores group by component_id
    ) as s
        on s.component_id = m.component_id

)

select * from final
