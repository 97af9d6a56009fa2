-- A profile is in a segment once.
select segment, profile_id, count(*) as rows_per_member
from {{ ref('segment_results') }}
group by segment, profile_id
having count(*) > 1
