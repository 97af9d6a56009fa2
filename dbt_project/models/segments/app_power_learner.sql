{#- The most active learners in the app: beta features, peer tutoring, course recommendations. -#}
{{ config(meta={'segment': {
    'name': 'App power learner',
    'description': 'At least 5 lessons completed in the app in the 14 days before as-of.',
    'kind': 'batch',
    'owner': 'learning-experience',
    'destinations': ['api', 'salesforce'],
}}) }}

select profile_id
from {{ ref('engagement_scores') }}
where lessons_completed_14d >= 5
