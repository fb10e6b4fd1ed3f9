// Creates the topics given as name:partitions that do not exist yet, in one admin request: one JVM
// instead of a kafka-topics run per topic. deploy/local/stack.sh runs it with Java's single-file
// source launcher: java -cp '<kafka jars>/*' CreateTopics.java <bootstrap> <name:partitions>...
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
  public static void main(String[] args) throws Exception {
    try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]))) {
      Set<String> existing = admin.listTopics().names().get();
      List<NewTopic> missing = new ArrayList<>();
      for (int i = 1; i < args.length; i++) {
        String[] spec = args[i].split(":");
        if (!existing.contains(spec[0])) {
          missing.add(new NewTopic(spec[0], Integer.parseInt(spec[1]), (short) 1));
        }
      }
      for (var result : admin.createTopics(missing).values().entrySet()) {
        try {
          result.getValue().get();
          System.out.println("created topic " + result.getKey());
        } catch (ExecutionException e) {
          // Another caller created it between our list and create: that is what we wanted.
          if (!(e.getCause() instanceof TopicExistsException)) throw e;
        }
      }
    }
  }
}
