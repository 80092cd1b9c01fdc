"""Import every domain's models so ``Base.metadata`` describes the whole schema.

Used to compare the migrations with the models (a test) and for autogenerating a migration.
Add a domain's models module here when the domain gets tables.
"""

import aicloud.platform.access.models
import aicloud.platform.audit.models
import aicloud.platform.billing.models
import aicloud.platform.iam.models
import aicloud.platform.metrics.models
import aicloud.platform.policy.models
import aicloud.products.gpuaas.models
import aicloud.shared.events
import aicloud.shared.idempotency  # noqa: F401
from aicloud.shared.db import Base

metadata = Base.metadata
