{#-
    Every segment's current members: one row per segment and profile, with the score of scored
    segments. The segments are the models in models/segments/, found in dbt's graph and inlined here
    (macros/segments/segments.sql explains why they are not ref'd): adding a segment is adding a file.
    Rebuilt whole on each run; gold.segment_changes compares it with the open memberships.
-#}
{{ config(materialized='table', cluster_by=cdp.bigquery_cluster_by(['profile_id'])) }}

{#- What segments may read. A segment reading another model fails compilation naming the line to add. -#}
-- depends_on: {{ ref('profiles') }}
-- depends_on: {{ ref('profile_events') }}
-- depends_on: {{ ref('engagement_scores') }}
-- depends_on: {{ ref('consent_current') }}
-- depends_on: {{ ref('whatsapp_message_insights') }}

with

members as (

    {{ cdp.union_segments() | indent(4) }}

),

final as (

    select
        segment,
        profile_id,
        score,
        {{ cdp.as_of() }} as as_of,
        {{ cdp.current_utc_timestamp() }} as computed_at
    from members

)

select * from final
